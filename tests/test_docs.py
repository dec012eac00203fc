"""The documentation (docs/*.md and the README's tour) covers the CLI and the settings, and holds together.

- every command has a synopsis in docs/: a code span (or a line of a code block) that starts
  with its full path, e.g. `newsletter subscribers add EMAIL [--name N] ...`, and every long
  option of the command appears in one of its synopses;
- every key of config.SCHEMA has its row, with its default and its environment variable, in the
  table under its section's heading in docs/configuration.md (and no row names a key that is gone);
- no page points to files that only the project's authors have;
- every relative link (and its #anchor) resolves, and every page is linked from the README.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
from helpers import walk_commands
import pytest

from newsletter import config
from newsletter.cli import cli

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = sorted(DOCS.glob("*.md"))
FILES = [README, *PAGES]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def code_texts(text: str) -> list[str]:
    """Every inline code span and every line of every fenced block (table pipes unescaped)."""
    found = []
    for block in FENCE.finditer(text):
        found += [line.strip() for line in block.group(0).splitlines()[1:-1]]
    found += INLINE_CODE.findall(FENCE.sub("", text))
    return [t.replace("\\|", "|").strip() for t in found]


def prose(text: str) -> str:
    """The text without code blocks and code spans (links inside code are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


# -- 1. every command and option --------------------------------------------------------------
COMMANDS = list(walk_commands(cli))
DOC_CODE = [t for page in PAGES for t in code_texts(text_of(page))]


def synopses(path: str, command: click.Command) -> list[str]:
    """Code in docs/ that starts with ``path`` and goes on with this command's own words: for a group,
    the word after the path must not be one of its subcommands (that would be theirs)."""
    subcommands = set(command.commands) if isinstance(command, click.Group) else set()
    found = []
    for code in DOC_CODE:
        if code != path and not code.startswith(path + " "):
            continue
        rest = code[len(path):].split()
        if rest and rest[0] in subcommands:
            continue
        found.append(code)
    return found


def long_options(command: click.Command) -> list[str]:
    return [opt for param in command.params if isinstance(param, click.Option) and not param.hidden
            for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")]


OPTIONS = [(path, command, option) for path, command in COMMANDS for option in long_options(command)]


@pytest.mark.parametrize("path, command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_has_a_synopsis_in_docs(path, command):
    if isinstance(command, click.Group) and command is not cli:  # its subcommands' synopses show it
        assert any(code.startswith(path + " ") for code in DOC_CODE), f"no page in docs/ shows `{path} ...`"
        return
    assert synopses(path, command), (
        f"no page in docs/ shows `{path} ...`: add a synopsis line such as `{path} ARG [--option]` "
        f"to the page about it")


@pytest.mark.parametrize("path, command, option", OPTIONS, ids=[f"{p} {o}" for p, _, o in OPTIONS])
def test_every_long_option_is_in_a_synopsis_of_its_command(path, command, option):
    word = re.compile(rf"(?<![\w-]){re.escape(option)}(?![\w-])")
    assert any(word.search(code) for code in synopses(path, command)), (
        f"`{path}` takes {option}, but no synopsis of it in docs/ shows it: add it to "
        f"`{path} ... [{option}]` and say what it does")


def test_the_walk_sees_nested_commands():
    paths = {path for path, _ in COMMANDS}
    assert {"newsletter", "newsletter send", "newsletter subscribers import", "newsletter config show"} <= paths


# -- 2. every configuration key -----------------------------------------------------------------
CONFIGURATION = DOCS / "configuration.md"
SECTION = re.compile(r"^## \[(\w+)\][ \t]*$", re.M)
ROW = re.compile(r"^\| `(?P<key>\w+)` \| `(?P<default>[^`]*)` \| `(?P<env>\w+)` \| (?P<meaning>.*\S) \|[ \t]*$", re.M)


def documented_keys() -> dict[str, dict[str, re.Match]]:
    """section -> key -> its table row, from the tables under each ``## [section]`` heading."""
    text = FENCE.sub("", text_of(CONFIGURATION))
    heads = list(SECTION.finditer(text))
    tables: dict[str, dict[str, re.Match]] = {}
    for n, head in enumerate(heads):
        end = heads[n + 1].start() if n + 1 < len(heads) else len(text)
        body = text[head.end():end].split("\n## ", 1)[0]  # up to the next heading of any kind
        tables[head.group(1)] = {row.group("key"): row for row in ROW.finditer(body)}
    return tables


def toml_literal(value) -> str:
    """A default as the docs write it, TOML-like: "text", true, 4, 30."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{value:g}"


KEYS = [(section, key) for section, keys in config.SCHEMA.items() for key in keys]


@pytest.mark.parametrize("section, key", KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_every_config_key_has_its_row(section, key):
    tables = documented_keys()
    assert section in tables, f"docs/configuration.md has no `## [{section}]` heading"
    row = tables[section].get(key)
    assert row, (f"docs/configuration.md: no row for `{key}` under `## [{section}]`; write "
                 f"| `{key}` | `default` | `NEWSLETTER_{section.upper()}_{key.upper()}` | meaning |")
    assert row.group("env") == f"NEWSLETTER_{section}_{key}".upper()
    assert row.group("default") == toml_literal(config.SCHEMA[section][key][0]), f"[{section}] {key}: stale default"


def test_configuration_documents_no_key_that_does_not_exist():
    stale = [f"[{section}] {key}" for section, rows in documented_keys().items() for key in rows
             if key not in config.SCHEMA.get(section, {})]
    assert not stale, f"docs/configuration.md documents keys config.SCHEMA does not have: {stale}"


# -- 3. nothing only the authors have -------------------------------------------------------------
FORBIDDEN = ("DESIGN.md", "STYLE.md", "../shared")


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(REPO).as_posix() for p in FILES])
def test_no_page_points_to_the_authors_own_files(path):
    text = text_of(path).lower()
    assert not [word for word in FORBIDDEN if word.lower() in text]


# -- 4. links -------------------------------------------------------------------------------
LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to dashes, repeats numbered."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", re.sub(r"<[^>]+>", "", heading).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def links(text: str) -> list[str]:
    plain = prose(text)
    return LINK.findall(plain) + REFERENCE.findall(plain)


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(REPO).as_posix() for p in FILES])
def test_relative_links_resolve(path):
    broken = []
    for target in links(text_of(path)):
        if SCHEME.match(target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        goal = (path.parent / file_part).resolve() if file_part else path
        if not goal.exists() or REPO not in goal.parents:
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and goal.suffix == ".md" and anchor not in anchors(text_of(goal)):
            broken.append(f"{target} (no heading #{anchor} in {goal.name})")
    assert not broken, f"{path.relative_to(REPO)}: broken links: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    assert PAGES, "docs/ has no pages"
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(text_of(README)) if not SCHEME.match(t)}
    assert not [p.name for p in PAGES if p.resolve() not in linked]


def test_the_checks_can_fail():
    """The helpers find what they look for, and miss what is not there."""
    page = "# T\n\n## `send` it\n\n`newsletter send ISSUE [--dry-run]`\n\n```sh\nnewsletter x --y\n```\n[a](b.md#c)\n"
    assert "newsletter send ISSUE [--dry-run]" in code_texts(page)
    assert "newsletter x --y" in code_texts(page)
    assert anchors(page) == {"t", "send-it"}
    assert links(page) == ["b.md#c"]
    assert toml_literal(30.0) == "30" and toml_literal("a") == '"a"' and toml_literal(False) == "false"
