"""Every command and option explains itself, and every command is in the README."""

from pathlib import Path

import click
import pytest

from newsletter.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def walk(group: click.Group, prefix: str = ""):
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from walk(command, path + " ")


COMMANDS = list(walk(cli))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_command_and_options_have_help(path, command):
    assert (command.help or "").strip(), f"`newsletter {path}` has no help text"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"`newsletter {path}` option {param.opts} has no help"


@pytest.mark.parametrize("path, command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_command_is_documented_in_readme(path, command):
    assert f"newsletter {path}" in README, f"README does not mention `newsletter {path}`"


def test_help_runs(run):
    result = run("--help")
    assert result.exit_code == 0 and "init" in result.output and "build" in result.output
