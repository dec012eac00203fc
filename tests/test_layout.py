"""The package's import rules (docs/architecture.md): each part imports only what lies below it.

Read from the source with ``ast``, so a rule broken in a function-level import is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "newsletter"
# `newsletter report` reads the provider's figures through the send loop's paced, retried look-up session,
# as `suppressions sync` does; nothing else outside sending/ may use its internals.
REPORT_LOOKUPS = ("newsletter.report imports newsletter.sending.lookups",
                  "newsletter.report imports newsletter.sending.ratelimit")
SENDING_PUBLIC = {"run", "plan", "outcomes", "reconcile", "suppression_sync", "lease", "proofs", "binding",
                  "schedule"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved; ``from X import name`` counts X.name too
    (the name may be a module)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def offenders(importers: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    def under(name: str, prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    return sorted(f"{module} imports {name}" for module, names in MODULES.items()
                  if under(module, (importers,)) or importers == "*"
                  for name in names if under(name, forbidden) and not under(name, allowed)
                  and not under(module, forbidden))


def test_the_rules_see_the_whole_package():
    assert {"newsletter.compile.render", "newsletter.sending.pool", "newsletter.cli.send",
            "newsletter.subscribers.reader", "newsletter.ledger.sqlite"} <= set(MODULES)
    assert "newsletter.compile.slots" in MODULES["newsletter.compile.render"]  # relative imports resolved
    assert "click" in MODULES["newsletter.cli"]


@pytest.mark.parametrize("forbidden", ["newsletter.providers", "newsletter.sending", "newsletter.ledger",
                                       "newsletter.cli", "click"])
def test_compiling_knows_nothing_of_sending(forbidden):
    assert offenders("newsletter.compile", (forbidden,)) == []


def test_only_the_cli_imports_click():
    importers = offenders("*", ("click",))
    assert "newsletter.cli.send imports click" in importers  # the rule sees what it looks for
    assert [line for line in importers if not line.startswith("newsletter.cli")] == []


def test_the_send_loop_is_imported_only_through_its_public_modules():
    internals = tuple(f"newsletter.sending.{name}" for name in ("pool", "lookups", "ratelimit", "feedprocess"))
    outside = [line for line in offenders("*", internals) if not line.startswith("newsletter.sending")
               and not line.startswith(REPORT_LOOKUPS)]
    assert outside == []
    modules = {name.rsplit(".", 1)[-1] for name in MODULES if name.startswith("newsletter.sending.")}
    assert modules - SENDING_PUBLIC <= {"pool", "lookups", "ratelimit", "feedprocess"}


@pytest.mark.parametrize("part", ["newsletter.subscribers", "newsletter.ledger", "newsletter.providers"])
def test_lower_parts_never_import_the_send_loop_or_the_cli(part):
    assert offenders(part, ("newsletter.sending", "newsletter.cli", "click")) == []


def test_the_list_and_the_ledger_know_no_provider():
    assert offenders("newsletter.subscribers", ("newsletter.providers", "newsletter.ledger")) == []
    assert offenders("newsletter.ledger", ("newsletter.providers", "newsletter.compile")) == []


def test_no_module_re_exports_with___all__():
    """A name is defined once and imported from where it is defined: no package re-exports."""
    assert [path for path in PACKAGE.rglob("*.py") if "__all__" in path.read_text()] == []
