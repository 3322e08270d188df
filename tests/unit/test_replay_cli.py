"""Every replay command documents itself and rejects a bad version name before connecting."""

from __future__ import annotations

import pytest

from projector.cli import main

COMMANDS = {
    "build": ["--version", "--from-beginning"],
    "status": [],
    "verify": ["--from", "--to", "--tenant", "--sample"],
    "promote": ["--max-lag", "--force"],
    "rollback": [],
    "drop": [],
    "job": ["--tenant", "--id", "--version", "--dry-run"],
}


@pytest.mark.parametrize(("command", "options"), COMMANDS.items())
def test_each_replay_command_has_help_naming_its_options(
    command: str, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["replay", command, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert f"replay {command}" in shown
    for option in options:
        assert option in shown


def test_replay_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    shown = capsys.readouterr().out
    for command in COMMANDS:
        assert command in shown


@pytest.mark.parametrize("argv", [["promote", "v 2"], ["build", "--version", "x" * 40]])
def test_a_bad_version_name_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["replay", *argv])
    assert exit_.value.code == 2
    assert "must be 1-32 letters" in capsys.readouterr().err
