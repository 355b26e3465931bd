"""The dev tooling's process supervisor and port picker, on real (tiny) processes."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from prfaas_dev.ports import HIGH, LOW, free_port, free_ports
from prfaas_dev.procs import Group, Proc, ProcessError

pytestmark = pytest.mark.integration


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """No such process, or only a zombie waiting for its reaper."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ports = [*free_ports(50), free_port()]
    assert len(set(ports)) == len(ports)
    assert all(LOW <= p < HIGH for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_stop_takes_the_whole_process_group(tmp_path: Path) -> None:
    # a shell that forks a grandchild: stopping the shell must stop the grandchild too
    proc = Proc.spawn("sh", ["sh", "-c", "sleep 60 & echo $!; wait"], tmp_path / "sh.log")
    proc.wait_ready(lambda: proc.tail().strip().isdigit(), timeout=10)
    grandchild = int(proc.tail().strip())
    proc.stop(grace_s=5)
    assert not proc.alive()
    assert _gone(grandchild)


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    proc = Proc.spawn("fails", ["sh", "-c", "echo no-such-flag; exit 3"], tmp_path / "f.log")
    with pytest.raises(ProcessError, match="fails exited during start-up:\nno-such-flag"):
        proc.wait_ready(lambda: False, timeout=10)


def test_not_ready_in_time(tmp_path: Path) -> None:
    with Group(tmp_path) as group:
        proc = group.start("slow", ["sleep", "60"])
        with pytest.raises(ProcessError, match="slow not ready after 0 s"):
            proc.wait_ready(lambda: False, timeout=0.3)
    assert not proc.alive()


def test_group_stops_everything_and_names_are_unique(tmp_path: Path) -> None:
    group = Group(tmp_path)
    names = []
    for _ in range(3):
        name = group.unique_name("sleeper")
        names.append(name)
        group.start(name, ["sleep", "60"], env={"PRFAAS_TEST": "1"})
    assert names == ["sleeper-0", "sleeper-1", "sleeper-2"]
    procs = list(group.procs)
    group.stop()
    assert not group.procs and not any(p.alive() for p in procs)


def test_a_later_process_can_stop_what_it_did_not_start(tmp_path: Path) -> None:
    started = Proc.spawn("sleeper", ["sleep", "60"], tmp_path / "s.log")
    attached = Proc.from_json(started.to_json())  # as `make cluster-down` reads state.json
    assert attached.popen is None and attached.alive()
    attached.stop()
    assert not started.alive()
    assert not attached.alive()
