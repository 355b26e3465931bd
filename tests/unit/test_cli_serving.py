"""Refusals of `prfaas engine` and `prfaas link` that happen before anything listens."""

from __future__ import annotations

import pytest

from prfaas import cli


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["link"], "nothing to relay"),
        (["link", "--gateway-port", "9400"], "needs --allow"),
        (["link", "--gateway-port", "9900", "--allow", "10.245.0.0/16"], "used twice"),
        # a pod's engine listening everywhere must say where decode can reach its KV port
        (["engine", "--role", "prefill", "--host", "0.0.0.0"], "--kv-advertise"),
        (["engine", "--role", "both", "--host", "::", "--kv-via", "link:9400"], "--kv-advertise"),
    ],
)
def test_refused_with_one_line(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_bad_allow_network_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["link", "--gateway-port", "9400", "--allow", "10.245.0.0/33"])
    assert e.value.code == 2
    assert "expected a network" in capsys.readouterr().err
