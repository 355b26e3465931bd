"""A real Kubernetes control plane (etcd + kube-apiserver, RBAC on) on loopback, for tests.

    with ControlPlane() as cp:
        cp.kubeconfig                                   # admin: O=system:masters
        cp.kubeconfig_for_user("alice", ["dev"])        # client cert CN=alice, O=dev
        cp.kubeconfig_for_user("system:serviceaccount:ns:sa")   # acts as that SA, RBAC enforced
        cp.kubeconfig_for_serviceaccount("ns", "sa")    # a real TokenRequest token

The binaries come from ``KUBEBUILDER_ASSETS`` (a directory holding kube-apiserver, etcd and
kubectl; ``TEST_ASSET_KUBE_APISERVER``/``TEST_ASSET_ETCD``/``TEST_ASSET_KUBECTL`` override single
ones), else from the cache that ``hack/build-k8s.sh`` (``make k8s-bin``) fills. Several control
planes can run at once: each has its own ports, certificates, etcd and state directory.

There is no controller-manager or scheduler: objects are stored and served, RBAC and validation
(CRD schemas, CEL) are enforced, but Deployments do not create Pods. Admission plugin
ServiceAccount is off, since nothing creates ``default`` service accounts.

CLI (``make cluster`` / ``make cluster-down``)::

    python -m prfaas.devcluster up --kubeconfig .local/kubeconfig --state-dir .local/cluster
    python -m prfaas.devcluster status --state-dir .local/cluster
    python -m prfaas.devcluster down --state-dir .local/cluster
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Keep in step with hack/build-k8s.sh (tests/integration checks that both name the same dir).
K8S_VERSION = "1.36.3"
ETCD_VERSION = "3.6.16"
HELM_VERSION = "3.22.0"

BINARIES = ("kube-apiserver", "etcd", "kubectl")
_ASSET_ENV = {
    "kube-apiserver": "TEST_ASSET_KUBE_APISERVER",
    "etcd": "TEST_ASSET_ETCD",
    "kubectl": "TEST_ASSET_KUBECTL",
}
STATE_FILE = "state.json"
Progress = Callable[[str], None]


class DevClusterError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


class BinariesMissingError(DevClusterError):
    """kube-apiserver/etcd/kubectl are not where they were looked for."""


# ---- binaries ------------------------------------------------------------------------------------


def cache_root() -> Path:
    if env := os.environ.get("PRFAAS_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "prfaas-operator"


def default_bin_dir() -> Path:
    """Where ``hack/build-k8s.sh`` puts the binaries (``hack/build-k8s.sh --print-dir``)."""
    key = f"k8s-v{K8S_VERSION}-etcd-v{ETCD_VERSION}-helm-v{HELM_VERSION}"
    return cache_root() / key / "bin"


def find_binaries(bin_dir: Path | None = None) -> dict[str, Path]:
    """kube-apiserver, etcd and kubectl; raises :class:`BinariesMissingError` naming the fix."""
    if bin_dir is not None:
        base, origin = bin_dir, "bin_dir argument"
    elif assets := os.environ.get("KUBEBUILDER_ASSETS"):
        base, origin = Path(assets), "KUBEBUILDER_ASSETS"
    else:
        base, origin = default_bin_dir(), "build cache"
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in BINARIES:
        override = os.environ.get(_ASSET_ENV[name]) if bin_dir is None else None
        path = Path(override) if override else base / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path.absolute()
        else:
            missing.append(f"{name} ({_ASSET_ENV[name]})" if override else name)
    if missing:
        raise BinariesMissingError(
            f"{', '.join(missing)} not found in {base} ({origin}). "
            "Run `make k8s-bin` (builds kube-apiserver, etcd, kubectl and helm from Go modules "
            "once: ~6-9 min on 2 cores, cached by version), or set KUBEBUILDER_ASSETS to a "
            "directory holding kube-apiserver, etcd and kubectl."
        )
    return found


# ---- certificates --------------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # fast to mint; fine for TLS and ES256 tokens


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class _CertAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> _CertAuthority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        server: bool = False,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its key, PEM. Client certs map CN → user, O → groups."""
        key = _new_key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = dt.datetime.now(dt.UTC)
        usage = x509.oid.ExtendedKeyUsageOID
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([usage.SERVER_AUTH if server else usage.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _cert_pem(cert), _key_pem(key)


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _kubeconfig_yaml(server: str, ca_pem: bytes, user: str, cred: dict[str, str]) -> str:
    """Kubeconfig text; scalars are JSON strings (valid YAML double-quoted scalars)."""

    def q(s: str) -> str:
        return json.dumps(s)

    cred_lines = "".join(f"\n    {k}: {q(v)}" for k, v in cred.items())
    ca = base64.b64encode(ca_pem).decode()
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: prfaas-dev\n"
        "  cluster:\n"
        f"    server: {q(server)}\n"
        f"    certificate-authority-data: {q(ca)}\n"
        "users:\n"
        f"- name: {q(user)}\n"
        f"  user:{cred_lines}\n"
        "contexts:\n"
        "- name: prfaas-dev\n"
        "  context:\n"
        "    cluster: prfaas-dev\n"
        f"    user: {q(user)}\n"
        "current-context: prfaas-dev\n"
    )


# ---- processes -----------------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while picking, so no duplicates)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _pdeathsig_hook() -> Callable[[], None] | None:
    """A preexec hook that SIGKILLs the child when its parent dies (Linux ``prctl``).

    Resolved here, in the parent: the hook runs between fork and exec, where loading
    libraries is unsafe in a multi-threaded parent.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return hook


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class _Process:
    name: str
    binary: Path
    log: Path
    pid: int
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def spawn(cls, name: str, argv: Sequence[str], log: Path, *, detached: bool) -> _Process:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the whole group
                preexec_fn=None if detached else _pdeathsig_hook(),
            )
        return cls(name, Path(argv[0]), log, popen.pid, popen)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_runs(self.pid, self.binary)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            self._signal(signal.SIGKILL)
            deadline = time.monotonic() + 5
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.alive():
            raise DevClusterError(f"{self.name} (pid {self.pid}) survived SIGKILL")

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(self.pid) == self.pid:  # our process-group leader, not a reused pid
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    def to_json(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "binary": str(self.binary),
            "log": str(self.log),
            "pid": self.pid,
        }

    @classmethod
    def from_json(cls, d: dict[str, str | int]) -> _Process:
        return cls(str(d["name"]), Path(str(d["binary"])), Path(str(d["log"])), int(d["pid"]))


def _pid_runs(pid: int, binary: Path) -> bool:
    """Whether ``pid`` is alive, not a zombie, and still runs ``binary`` (guards pid reuse)."""
    proc = Path("/proc") / str(pid)
    if not Path("/proc/self").exists():  # not Linux: best effort
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = (proc / "stat").read_text()
        argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return argv0 == str(binary)


# ---- the control plane ---------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver on free loopback ports, RBAC enforced, admin via client cert.

    ``state_dir`` (default: a fresh temp dir, removed by :meth:`stop`) holds ``pki/``, ``etcd/``
    (data), ``logs/``, ``users/`` and ``admin.kubeconfig``. With ``detached=True`` the processes
    outlive this Python process (``up``/``down`` CLI); otherwise they die with it.
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        state_dir: Path | None = None,
        start_timeout: float = 120.0,
        extra_apiserver_args: Sequence[str] = (),
        detached: bool = False,
        progress: Progress | None = None,
    ) -> None:
        self._bin_dir = bin_dir
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir).absolute() if state_dir is not None else None
        self.start_timeout = start_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.detached = detached
        self._progress = progress or (lambda _msg: None)
        self._procs: list[_Process] = []
        self._ca: _CertAuthority | None = None
        self.etcd_url = ""
        self.server = ""
        self.startup_seconds = 0.0

    # -- paths

    @property
    def _dir(self) -> Path:
        if self.state_dir is None:
            raise DevClusterError("control plane not started")
        return self.state_dir

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user ``prfaas-admin``, group ``system:masters``)."""
        return self._dir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self._dir / "pki" / "ca.crt"

    @property
    def log_dir(self) -> Path:
        return self._dir / "logs"

    # -- lifecycle

    def start(self) -> ControlPlane:
        if self._procs:
            raise DevClusterError("control plane already started")
        binaries = find_binaries(self._bin_dir)
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="prfaas-cp-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.detached:
            atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            for attempt in range(3):  # a picked port can be taken before the server binds it
                try:
                    self._start_once(binaries)
                    break
                except _PortInUseError:
                    self._stop_processes()
                    if attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        self._progress(f"control plane ready in {self.startup_seconds:.1f} s: {self.server}")
        return self

    def _start_once(self, binaries: dict[str, Path]) -> None:
        d = self._dir
        etcd_port, peer_port, api_port = _free_ports(3)
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.server = f"https://127.0.0.1:{api_port}"
        pki = self._mint_pki()
        shutil.rmtree(d / "etcd", ignore_errors=True)

        self._progress(f"starting etcd v{ETCD_VERSION} on {self.etcd_url}")
        peer = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=default",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait(etcd, f"{self.etcd_url}/health", None, lambda body: b'"true"' in body)

        self._progress(f"starting kube-apiserver v{K8S_VERSION} on {self.server}")
        api = self._spawn(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",  # no default route needed
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                "--disable-admission-plugins=ServiceAccount",  # no controller makes `default` SAs
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--enable-priority-and-fairness=false",  # CPU: small machines
                "--profiling=false",
                *self.extra_apiserver_args,
            ],
        )
        self._wait(api, f"{self.server}/readyz", self._admin_ssl(), lambda body: body == b"ok")
        _write(self.kubeconfig, self._client_kubeconfig("prfaas-admin", ["system:masters"]))
        self._save_state()

    def _mint_pki(self) -> Path:
        pki = self._dir / "pki"
        ca = _CertAuthority.create("prfaas-dev-ca")
        self._ca = ca
        _write(pki / "ca.crt", _cert_pem(ca.cert), 0o644)
        _write(pki / "ca.key", _key_pem(ca.key))
        crt, key = ca.issue(
            "kube-apiserver",
            server=True,
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ips=["127.0.0.1", "10.0.0.1"],
        )
        _write(pki / "apiserver.crt", crt, 0o644)
        _write(pki / "apiserver.key", key)
        crt, key = ca.issue("prfaas-admin", ["system:masters"])
        _write(pki / "admin.crt", crt, 0o644)
        _write(pki / "admin.key", key)
        sa = _new_key()
        _write(pki / "sa.key", _key_pem(sa))
        sa_pub = sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write(pki / "sa.pub", sa_pub, 0o644)
        return pki

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        log = self.log_dir / f"{name}.log"
        log.unlink(missing_ok=True)
        proc = _Process.spawn(name, argv, log, detached=self.detached)
        self._procs.append(proc)
        return proc

    def _admin_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        pki = self._dir / "pki"
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _wait(
        self,
        proc: _Process,
        url: str,
        ctx: ssl.SSLContext | None,
        ok: Callable[[bytes], bool],
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                tail = _tail(proc.log)
                if "address already in use" in tail:
                    raise _PortInUseError(proc.name)
                raise DevClusterError(f"{proc.name} exited during start; {proc.log}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                    body = resp.read()
                    if ok(body):
                        return
                    last = body.decode(errors="replace")[-300:]
            except urllib.error.HTTPError as e:  # /readyz answers 500 until post-start hooks run
                last = f"HTTP {e.code}"
            except (OSError, ssl.SSLError) as e:
                last = str(e)
            time.sleep(0.2)
        raise DevClusterError(
            f"{proc.name} not ready after {self.start_timeout:.0f} s ({url}: {last}); "
            f"{proc.log}:\n{_tail(proc.log)}"
        )

    def stop(self) -> None:
        """Stop kube-apiserver then etcd (process groups), remove certs/data; idempotent."""
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        self._stop_processes()
        if self.state_dir is not None:
            if self._own_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)
                self.state_dir = None
            else:
                for sub in ("etcd", "pki", "users"):
                    shutil.rmtree(self.state_dir / sub, ignore_errors=True)
                for f in ("admin.kubeconfig", STATE_FILE):
                    (self.state_dir / f).unlink(missing_ok=True)

    def _stop_processes(self) -> None:
        errors = []
        for proc in reversed(self._procs):
            try:
                proc.stop()
            except DevClusterError as e:
                errors.append(str(e))
        self._procs = []
        if errors:
            raise DevClusterError("; ".join(errors))

    def running(self) -> bool:
        return bool(self._procs) and all(p.alive() for p in self._procs)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state (for the detached CLI)

    def _save_state(self) -> None:
        state = {
            "server": self.server,
            "etcd": self.etcd_url,
            "kubeconfig": str(self.kubeconfig),
            "processes": [p.to_json() for p in self._procs],
        }
        _write(self._dir / STATE_FILE, json.dumps(state, indent=2).encode(), 0o644)

    @classmethod
    def attach(cls, state_dir: Path) -> ControlPlane:
        """The control plane that ``up`` (or a detached start) left running in ``state_dir``."""
        state_file = Path(state_dir) / STATE_FILE
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError) as e:
            raise DevClusterError(f"no control plane state in {state_dir}: {e}") from e
        cp = cls(state_dir=Path(state_dir), detached=True)
        cp.server = str(state["server"])
        cp.etcd_url = str(state["etcd"])
        cp._procs = [_Process.from_json(p) for p in state["processes"]]
        return cp  # the CA is loaded when a user kubeconfig is asked for, so `down` needs no pki

    # -- users

    def _authority(self) -> _CertAuthority:
        if self._ca is None:
            try:
                key = serialization.load_pem_private_key(
                    (self._dir / "pki" / "ca.key").read_bytes(), None
                )
                cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            except (OSError, ValueError) as e:
                raise DevClusterError(f"control plane not started (no CA): {e}") from e
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise DevClusterError("unexpected CA key type")
            self._ca = _CertAuthority(key, cert)
        return self._ca

    def _client_kubeconfig(self, user: str, groups: Sequence[str]) -> bytes:
        crt, key = self._authority().issue(user, groups)
        cred = {
            "client-certificate-data": base64.b64encode(crt).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        }
        return _kubeconfig_yaml(self.server, self.ca_file.read_bytes(), user, cred).encode()

    def kubeconfig_for_user(
        self, name: str, groups: Iterable[str] | None = None, *, path: Path | None = None
    ) -> Path:
        """A kubeconfig authenticating as ``name`` in ``groups`` (client cert: CN, O).

        ``groups=None`` for ``system:serviceaccount:<ns>:<sa>`` gives the groups a real token
        would carry (``system:serviceaccounts``, ``system:serviceaccounts:<ns>``). No
        RBAC is granted: the user can do what bindings allow (``system:authenticated`` only).
        """
        if groups is None:
            parts = name.split(":")
            sa = len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]
            groups = ["system:serviceaccounts", f"system:serviceaccounts:{parts[2]}"] if sa else []
        path = path or self._dir / "users" / f"{_safe(name)}.kubeconfig"
        return _write(path, self._client_kubeconfig(name, list(groups)))

    def kubeconfig_for_serviceaccount(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600, path: Path | None = None
    ) -> Path:
        """A kubeconfig with a bound token from the TokenRequest API (the SA must exist)."""
        body = json.dumps(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            }
        ).encode()
        url = f"{self.server}/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10, context=self._admin_ssl()) as resp:
                token = str(json.load(resp)["status"]["token"])
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            raise DevClusterError(f"TokenRequest for {namespace}/{name}: {e.code} {detail}") from e
        user = f"system:serviceaccount:{namespace}:{name}"
        text = _kubeconfig_yaml(self.server, self.ca_file.read_bytes(), user, {"token": token})
        path = path or self._dir / "users" / f"{_safe(user)}-token.kubeconfig"
        return _write(path, text.encode())

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the matching kubectl against this control plane (admin unless ``kubeconfig``)."""
        binary = find_binaries(self._bin_dir)["kubectl"]
        cfg = kubeconfig or self.kubeconfig
        return subprocess.run(
            [str(binary), f"--kubeconfig={cfg}", *args],
            capture_output=True,
            text=True,
            check=check,
        )


class _PortInUseError(DevClusterError):
    pass


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ---- CLI -----------------------------------------------------------------------------------------


def _say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def _up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    kubeconfig = Path(args.kubeconfig)
    if (state_dir / STATE_FILE).exists():
        old = ControlPlane.attach(state_dir)
        if old.running():
            _say(f"control plane already running: {old.server}")
            kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(old.kubeconfig, kubeconfig)
            print(f"export KUBECONFIG={kubeconfig}")
            return 0
        _say("cleaning up a control plane that is no longer running")
        old.stop()
    cp = ControlPlane(
        bin_dir=Path(args.bin_dir) if args.bin_dir else None,
        state_dir=state_dir,
        start_timeout=args.timeout,
        detached=True,
        progress=_say,
    )
    try:
        cp.start()
    except DevClusterError as e:
        print(f"devcluster up failed: {e}", file=sys.stderr)
        return 1
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cp.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o600)
    _say(f"logs: {cp.log_dir}; stop: python -m prfaas.devcluster down --state-dir {state_dir}")
    _say(f"admin kubeconfig: {kubeconfig}")
    print(f"export KUBECONFIG={kubeconfig}")
    return 0


def _down(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    if not (state_dir / STATE_FILE).exists():
        _say(f"no control plane in {state_dir}")
        return 0
    cp = ControlPlane.attach(state_dir)
    _say(f"stopping control plane {cp.server}")
    cp.stop()
    if args.kubeconfig:
        Path(args.kubeconfig).unlink(missing_ok=True)
    _say("stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    if not (state_dir / STATE_FILE).exists():
        print("not running")
        return 1
    cp = ControlPlane.attach(state_dir)
    for p in cp._procs:
        print(f"{p.name:15} pid {p.pid:<8} {'running' if p.alive() else 'DEAD'}  log {p.log}")
    print(f"server {cp.server}")
    return 0 if cp.running() else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prfaas.devcluster", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd + kube-apiserver in the background, wait ready")
    up.add_argument("--kubeconfig", default=".local/kubeconfig", help="write the admin one here")
    up.add_argument("--state-dir", default=".local/cluster")
    up.add_argument("--bin-dir", help="directory with kube-apiserver/etcd/kubectl")
    up.add_argument("--timeout", type=float, default=120.0, help="start timeout, seconds")
    down = sub.add_parser("down", help="stop what `up` started, remove its data and certs")
    down.add_argument("--state-dir", default=".local/cluster")
    down.add_argument("--kubeconfig", help="also remove this kubeconfig")
    status = sub.add_parser("status", help="exit 0 when running")
    status.add_argument("--state-dir", default=".local/cluster")
    sub.add_parser("bin-dir", help="print where the binaries are looked for")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "down":
            return _down(args)
        if args.command == "status":
            return _status(args)
        if os.environ.get("KUBEBUILDER_ASSETS"):
            print(os.environ["KUBEBUILDER_ASSETS"])
        else:
            print(default_bin_dir())
        return 0
    except DevClusterError as e:
        print(f"devcluster: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


def scale_target(name: str, namespace: str, replicas: int) -> dict[str, object]:
    """A Deployment to serve as a ``/scale`` target on this control plane.

    No controller-manager runs here, so its pods never exist: only ``spec.replicas`` matters.
    """
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "engine", "image": "prfaas-engine:test"}]},
            },
        },
    }
