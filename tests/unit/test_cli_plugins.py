"""`prfaas demo` comes from the dev tooling through the CLI's entry-point group; without the dev
tooling installed (the image), `prfaas` has no such subcommand."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import pytest

from prfaas import cli


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return int(e.value.code or 0)


def test_demo_is_registered_by_the_dev_tooling(capsys: pytest.CaptureFixture[str]) -> None:
    found = {ep.name: ep.value for ep in entry_points(group=cli.PLUGIN_GROUP)}
    assert found["demo"] == "prfaas_dev.demo.command:register"
    assert _exit_code(["demo", "--help"]) == 0
    assert "--speedup" in capsys.readouterr().out


def test_without_the_dev_tooling_there_is_no_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    def none(group: str) -> list[EntryPoint]:
        assert group == cli.PLUGIN_GROUP
        return []

    monkeypatch.setattr(cli, "entry_points", none)
    assert _exit_code(["demo", "--help"]) == 2  # argparse: invalid choice
    assert _exit_code(["plan", "--help"]) == 0
