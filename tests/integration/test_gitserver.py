"""The GitOps tests' git server (git http-backend behind ``prfaas_dev.gitserver``) with git itself
as the client: clones and fetches new commits, refuses pushes, refuses oversized bodies."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from prfaas_dev.gitserver import MAX_BODY, GitError, GitRepo, GitServer, git

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[GitRepo, GitServer]]:
    repo = GitRepo.create(tmp_path / "work", tmp_path / "srv" / "r.git")
    repo.commit("first", {"a.txt": "one\n"})
    with GitServer(tmp_path / "srv", tmp_path / "git-server.log") as server:
        yield repo, server


def test_clone_then_fetch_new_commits_and_reverts(
    served: tuple[GitRepo, GitServer], tmp_path: Path
) -> None:
    repo, server = served
    clone = tmp_path / "clone"
    git("clone", "-q", server.url("r.git"), str(clone))
    assert git("rev-parse", "HEAD", cwd=clone) == repo.head()
    second = repo.commit("second", {"a.txt": "two\n"})
    git("pull", "-q", cwd=clone)
    assert git("rev-parse", "HEAD", cwd=clone) == second
    assert (clone / "a.txt").read_text() == "two\n"
    repo.revert()
    git("pull", "-q", cwd=clone)
    assert (clone / "a.txt").read_text() == "one\n"


def test_push_is_refused(served: tuple[GitRepo, GitServer], tmp_path: Path) -> None:
    repo, server = served
    clone = tmp_path / "clone"
    git("clone", "-q", server.url("r.git"), str(clone))
    (clone / "b.txt").write_text("x\n")
    git("add", "b.txt", cwd=clone)
    git("commit", "-qm", "from a client", cwd=clone)
    with pytest.raises(GitError, match="403"):
        git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=clone)
    assert git("rev-parse", "HEAD", cwd=repo.bare) == repo.head()  # unchanged


def test_oversized_body_is_refused(served: tuple[GitRepo, GitServer]) -> None:
    _, server = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", "/r.git/git-upload-pack")
    conn.putheader("Content-Type", "application/x-git-upload-pack-request")
    conn.putheader("Content-Length", str(MAX_BODY + 1))  # the server answers before reading it
    conn.endheaders()
    assert conn.getresponse().status == 413
