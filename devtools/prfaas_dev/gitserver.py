"""A git server on loopback for GitOps tests: git's own smart-HTTP backend (``git http-backend``,
from Debian's ``git``) behind a small HTTP front that runs it as CGI, and a repository to commit to.

Flux's source-controller clones over http(s) or ssh only (not ``git://``), so ``git daemon`` is
not enough; the front here only translates HTTP to CGI, git itself serves the protocol.

    repo = GitRepo.create(tmp / "work", tmp / "srv" / "prfaas.git")    # bare repo under srv/
    sha = repo.commit("initial", {"manifests": ROOT / "manifests"})
    with GitServer(tmp / "srv", log=tmp / "git.log") as server:
        server.url("prfaas.git")                                        # http://127.0.0.1:PORT/prfaas.git

CLI: ``python -m prfaas_dev.gitserver --root DIR --port N`` (serves every repository under DIR,
read-only, until SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self

from prfaas_dev.ports import free_port
from prfaas_dev.procs import Proc

__all__ = ["GitError", "GitRepo", "GitServer", "main"]

# Commits made here carry this identity and no user or system git configuration is read, so a
# machine's ~/.gitconfig (signing, hooks, default branch) cannot change what the tests see.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "prfaas-tests",
    "GIT_AUTHOR_EMAIL": "tests@prfaas.invalid",
    "GIT_COMMITTER_NAME": "prfaas-tests",
    "GIT_COMMITTER_EMAIL": "tests@prfaas.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}
MAX_BODY = 64 << 20  # a fetch request is small; refuse anything absurd


class GitError(RuntimeError):
    """git is missing or a git command failed; the message has its stderr."""


def git_binary() -> str:
    found = shutil.which("git")
    if found is None:
        raise GitError("git is not installed (Debian: apt-get install git)")
    return found


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [git_binary(), *args],
        cwd=cwd,
        env={**os.environ, **_GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


# ---- the repository ------------------------------------------------------------------------------


class GitRepo:
    """A working tree whose commits are pushed to a bare repository (the one served)."""

    def __init__(self, work: Path, bare: Path, branch: str = "main") -> None:
        self.work = work
        self.bare = bare
        self.branch = branch

    @classmethod
    def create(cls, work: Path, bare: Path, branch: str = "main") -> GitRepo:
        bare.parent.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "--bare", f"--initial-branch={branch}", str(bare))
        git("init", "-q", f"--initial-branch={branch}", str(work))
        git("remote", "add", "origin", str(bare), cwd=work)
        return cls(work, bare, branch)

    def write(self, files: Mapping[str, Path | str]) -> None:
        """Put files into the tree: a ``Path`` is copied (a directory recursively), a ``str`` is
        the new content; keys are paths relative to the repository root."""
        for rel, what in files.items():
            dest = self.work / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(what, Path) and what.is_dir():
                shutil.copytree(what, dest, dirs_exist_ok=True)
            elif isinstance(what, Path):
                shutil.copyfile(what, dest)
            else:
                dest.write_text(what, encoding="utf-8")

    def commit(self, message: str, files: Mapping[str, Path | str] | None = None) -> str:
        """Write ``files``, commit everything, push; the new commit's sha."""
        self.write(files or {})
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)
        return self.head()

    def revert(self, message: str | None = None) -> str:
        """Revert the last commit (a new commit, as one would in Git), push; the new sha."""
        git("revert", "--no-edit", "HEAD", cwd=self.work)
        if message:
            git("commit", "-q", "--amend", "-m", message, cwd=self.work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)
        return self.head()

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work)


# ---- the server ----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
                if len(out) > MAX_BODY:
                    return None
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length <= MAX_BODY else None

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        if body is None:
            self.send_error(413, "request body too large")
            return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",  # every repository under the root, read-only
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        proc = subprocess.run(
            [git_binary(), "http-backend"],
            input=body,
            env={**env, **_GIT_ENV},
            capture_output=True,
            check=False,
            timeout=120,
        )
        head, payload = _split_cgi(proc.stdout)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        if proc.returncode != 0 and not head:
            self.send_error(500, proc.stderr.decode(errors="replace")[-200:])
            return
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _split_cgi(out: bytes) -> tuple[bytes, bytes]:
    """A CGI response's header block and body (the blank line may be CRLF or LF)."""
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := out.find(sep)) >= 0]
    if not ends:
        return b"", out
    i, n = min(ends)
    return out[:i], out[i + n :]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path) -> None:
        super().__init__(address, _Handler)
        self.root = root


def serve(root: Path, host: str, port: int) -> None:
    with _Server((host, port), root.resolve()) as server:
        print(f"serving {root} on http://{host}:{port}/", file=sys.stderr, flush=True)
        server.serve_forever()


class GitServer:
    """``python -m prfaas_dev.gitserver`` as a child process on a free loopback port."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log
        self.port = 0
        self.proc: Proc | None = None

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo}"

    def start(self) -> Self:
        git_binary()  # a clear error before anything starts
        self.port = free_port()
        argv = [sys.executable, "-m", "prfaas_dev.gitserver", "--root", str(self.root)]
        argv += ["--port", str(self.port)]
        self.proc = Proc.spawn("git-server", argv, self.log, die_with_parent=True)
        try:
            self.proc.wait_ready(self._listening, timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):
            return True

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prfaas_dev.gitserver",
        description="Serve the git repositories under --root read-only over smart HTTP "
        "(git http-backend), on loopback.",
    )
    parser.add_argument("--root", type=Path, required=True, help="directory of repositories")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: loopback)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: not a directory")
    try:
        git_binary()
        serve(args.root, args.host, args.port)
    except GitError as e:
        print(f"gitserver: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
