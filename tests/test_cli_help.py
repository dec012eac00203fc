"""Every command and option explains itself, and every command is in the README."""

from pathlib import Path

import click
import pytest
from helpers import walk_commands

from newsletter.cli import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


COMMANDS = [(path.removeprefix("newsletter "), command) for path, command in walk_commands(cli)][1:]


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


def test_every_command_is_found_through_the_lazy_table():
    """The table that loads commands on demand names each one with the first line of its own help, and
    nothing is left out (a command missing from it would be invisible)."""
    from newsletter.cli import COMMANDS as TABLE

    top = {path: command for path, command in COMMANDS if " " not in path}
    assert set(top) == set(TABLE) and len(top) >= 14
    for name, (_module, first_line) in TABLE.items():
        assert (top[name].help or "").split("\n")[0] == first_line, name


def test_starting_the_cli_loads_no_heavy_library():
    """`newsletter --help` and a quick `status` must start fast: importing the CLI and printing its help
    load none of the libraries only some commands need (measured in benchmarks/startup.py)."""
    import subprocess
    import sys

    code = ("import sys\nfrom newsletter.cli import cli\n"
            "try:\n    cli(['--help'], prog_name='newsletter')\nexcept SystemExit:\n    pass\n"
            "heavy = ('requests', 'jinja2', 'markdown_it', 'email_validator', 'mjml', 'css_inline', 'yaml',\n"
            "         'premailer', 'newsletter.providers', 'newsletter.compile', 'newsletter.sending')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Commands:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
