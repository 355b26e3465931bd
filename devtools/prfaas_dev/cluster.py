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

    python -m prfaas_dev.cluster up --kubeconfig .local/kubeconfig --state-dir .local/cluster
    python -m prfaas_dev.cluster status --state-dir .local/cluster
    python -m prfaas_dev.cluster down --state-dir .local/cluster
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from prfaas_dev.binaries import (
    ETCD_VERSION,
    K8S_VERSION,
    BinariesMissingError,
    DevClusterError,
    default_bin_dir,
    find_binaries,
)
from prfaas_dev.kubectl import kubectl
from prfaas_dev.pki import CertAuthority, cert_pem, key_pem, kubeconfig_yaml, new_key, write_file
from prfaas_dev.ports import free_ports
from prfaas_dev.procs import Proc, ProcessError

__all__ = [
    "K8S_VERSION",
    "BinariesMissingError",
    "ControlPlane",
    "DevClusterError",
    "default_bin_dir",
    "find_binaries",
    "main",
    "scale_target",
]

STATE_FILE = "state.json"
STOP_GRACE_S = 15.0
Progress = Callable[[str], None]


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
        self._procs: list[Proc] = []
        self._ca: CertAuthority | None = None
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
        etcd_port, peer_port, api_port = free_ports(3)
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
        write_file(self.kubeconfig, self._client_kubeconfig("prfaas-admin", ["system:masters"]))
        self._save_state()

    def _mint_pki(self) -> Path:
        pki = self._dir / "pki"
        ca = CertAuthority.create("prfaas-dev-ca")
        self._ca = ca
        write_file(pki / "ca.crt", cert_pem(ca.cert), 0o644)
        write_file(pki / "ca.key", key_pem(ca.key))
        crt, key = ca.issue(
            "kube-apiserver",
            server=True,
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ips=["127.0.0.1", "10.0.0.1"],
        )
        write_file(pki / "apiserver.crt", crt, 0o644)
        write_file(pki / "apiserver.key", key)
        crt, key = ca.issue("prfaas-admin", ["system:masters"])
        write_file(pki / "admin.crt", crt, 0o644)
        write_file(pki / "admin.key", key)
        sa = new_key()
        write_file(pki / "sa.key", key_pem(sa))
        sa_pub = sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        write_file(pki / "sa.pub", sa_pub, 0o644)
        return pki

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        log = self.log_dir / f"{name}.log"
        # detached: outlive this Python process (`up`); otherwise die with it
        proc = Proc.spawn(name, argv, log, die_with_parent=not self.detached)
        self._procs.append(proc)
        return proc

    def _admin_ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        pki = self._dir / "pki"
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _wait(
        self,
        proc: Proc,
        url: str,
        ctx: ssl.SSLContext | None,
        ok: Callable[[bytes], bool],
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                tail = proc.tail(40) or "(empty log)"
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
            f"{proc.log}:\n{proc.tail(40)}"
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
                proc.stop(STOP_GRACE_S)
            except ProcessError as e:
                errors.append(str(e))
        self._procs = []
        if errors:
            raise DevClusterError("; ".join(errors))

    def running(self) -> bool:
        return bool(self._procs) and all(p.alive() for p in self._procs)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- state (for the detached CLI)

    def _save_state(self) -> None:
        state = {
            "server": self.server,
            "etcd": self.etcd_url,
            "kubeconfig": str(self.kubeconfig),
            "processes": [p.to_json() for p in self._procs],
        }
        write_file(self._dir / STATE_FILE, json.dumps(state, indent=2).encode(), 0o644)

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
        cp._procs = [Proc.from_json(p) for p in state["processes"]]
        return cp  # the CA is loaded when a user kubeconfig is asked for, so `down` needs no pki

    # -- users

    def _authority(self) -> CertAuthority:
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
            self._ca = CertAuthority(key, cert)
        return self._ca

    def _client_kubeconfig(self, user: str, groups: Sequence[str]) -> bytes:
        crt, key = self._authority().issue(user, groups)
        cred = {
            "client-certificate-data": base64.b64encode(crt).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        }
        return kubeconfig_yaml(self.server, self.ca_file.read_bytes(), user, cred).encode()

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
        return write_file(path, self._client_kubeconfig(name, list(groups)))

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
        text = kubeconfig_yaml(self.server, self.ca_file.read_bytes(), user, {"token": token})
        path = path or self._dir / "users" / f"{_safe(user)}-token.kubeconfig"
        return write_file(path, text.encode())

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the matching kubectl against this control plane (admin unless ``kubeconfig``)."""
        return kubectl(kubeconfig or self.kubeconfig, *args, check=check, bin_dir=self._bin_dir)


class _PortInUseError(DevClusterError):
    pass


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


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
    _say(f"logs: {cp.log_dir}; stop: python -m prfaas_dev.cluster down --state-dir {state_dir}")
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
        prog="python -m prfaas_dev.cluster", description=__doc__.split("\n\n")[0] if __doc__ else ""
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
