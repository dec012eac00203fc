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


# What `--help` and `status` must never load: the libraries and packages only building and sending need.
HEAVY = ("requests", "jinja2", "markdown_it", "email_validator", "mjml", "css_inline", "premailer", "cryptography",
         "newsletter.providers")


def loaded_by(args: list[str], cwd=None, heavy: tuple[str, ...] = HEAVY) -> tuple[list[str], str]:
    """Run the CLI with ``args`` in a fresh interpreter; the heavy modules it loaded (after its own output)."""
    import subprocess
    import sys

    code = ("import sys\nfrom newsletter.cli import cli\n"
            f"try:\n    cli({args!r}, prog_name='newsletter')\nexcept SystemExit:\n    pass\n"
            f"heavy = {heavy!r}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd)
    *output, modules = result.stdout.strip().splitlines()
    return output, modules


def test_starting_the_cli_loads_no_heavy_library():
    """`newsletter --help` and a quick `status` must start fast: importing the CLI and printing its help
    load none of the libraries only some commands need (measured in benchmarks/startup.py)."""
    output, modules = loaded_by(["--help"])
    assert "Commands:" in "\n".join(output)
    assert modules == "[]"
    # nor does the help of a single command load its module's libraries (the ledger, the YAML reader)
    output, modules = loaded_by(["status", "--help"])
    assert "--failed" in "\n".join(output)
    assert modules == "[]"


def test_status_of_a_sent_issue_loads_no_heavy_library(run, workspace):
    """`newsletter status ISSUE` reads the front matter and the ledger: no compiler, no provider, no
    HTTP library, even for an issue the outbox sent (its route is named from the ledger)."""
    assert run("send", "2026-11-30-weekly", "--yes", env={"NEWSLETTER_SECRET": "s"}).exit_code == 0
    output, modules = loaded_by(["status", "2026-11-30-weekly"], cwd=workspace)
    assert output[0].startswith("2026-11-30-weekly: ") and "provider: outbox" in output
    assert modules == "[]"


def test_building_through_the_outbox_loads_no_http_library(workspace):
    """`newsletter build` compiles and writes files: the outbox's adapter (asked what compiling must know of
    the provider) must not bring requests and urllib3 with it, a third of the command's start."""
    output, modules = loaded_by(["build", "2026-11-30-weekly", "--out", "out"], cwd=workspace,
                                heavy=("requests", "urllib3"))
    assert any(line.startswith("wrote ") for line in output)
    assert modules == "[]"


@pytest.mark.parametrize("args, option", [(["dispatch", "-v"], "-v"), (["status", "--debug"], "--debug"),
                                          (["send", "ISSUE", "-q"], "-q"),
                                          (["subscribers", "import", "F", "-q"], "-q")])
def test_a_global_option_after_the_command_says_where_it_goes(workspace, args, option):
    """`newsletter dispatch -v` is what a user types first: say that the option goes before the command."""
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    command = " ".join(args[:2]) if args[0] == "subscribers" else args[0]
    assert (f"Error: No such option: {option} here; it is an option of newsletter itself, written before the "
            f"command: newsletter {option} {command} ...") in result.output


def test_an_unknown_option_of_the_command_is_clicks_own_error(workspace):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["status", "--bogus"])
    assert result.exit_code == 2 and "No such option '--bogus'" in result.output


@pytest.mark.parametrize("args, words", [
    (["subscriber", "list"], "Error: No such command 'subscriber'. Did you mean 'subscribers'"),
    (["stauts"], "Error: No such command 'stauts'. Did you mean 'status'?"),
    (["unsubscribe", "ada@example.com"], "Error: No such command 'ada@example.com'. To mark a reader unsubscribed, "
                                         "run `newsletter subscribers unsubscribe ada@example.com`"),
])
def test_a_command_that_does_not_exist_gets_a_guess(workspace, args, words):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and words in result.output
