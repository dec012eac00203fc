"""``init`` and ``new``: create a workspace and new issues from the bundled example."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import unicodedata
from importlib import resources
from pathlib import Path

from .errors import NewsletterError

GITIGNORE = ("# newsletter: generated mail and the delivery ledger (personal data) stay out of git\n"
             ".newsletter/\noutbox/\n# a subscriber-list lock left by a killed command\nsubscribers/.*.lock\n")
WORKSPACE_FILES = ("newsletter.toml", "subscribers/subscribers.csv", "issues/2026-11-30-weekly.md")


def bundled_workspace() -> Path:
    """The example workspace: inside the wheel, or the repository itself in a source checkout."""
    packaged = Path(str(resources.files("newsletter"))) / "_workspace"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "newsletter.toml").is_file() and (checkout / "templates").is_dir():
        return checkout
    raise NewsletterError("the bundled example workspace is missing from this installation",
                          hint="reinstall newsletter")


def init_workspace(target: Path, *, force: bool = False) -> list[Path]:
    if (target / "newsletter.toml").exists() and not force:
        raise NewsletterError("a workspace already exists here", path=str(target / "newsletter.toml"),
                              hint="use --force to overwrite its example files (your issues are kept)")
    source = bundled_workspace()
    written = []
    for relative in WORKSPACE_FILES:
        dest = target / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, dest)
        written.append(dest)
    for layout in sorted((source / "templates").glob("*.mjml")):
        dest = target / "templates" / layout.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(layout, dest)
        written.append(dest)
    gitignore = target / ".gitignore"
    existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    if ".newsletter/" not in existing:
        gitignore.write_text(existing + ("\n" if existing and not existing.endswith("\n") else "") + GITIGNORE,
                             encoding="utf-8")
        written.append(gitignore)
    return written


def slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return slug[:60].rstrip("-") or "issue"


def new_issue(issues_dir: Path, title: str, today: dt.date | None = None) -> Path:
    today = today or dt.date.today()
    path = issues_dir / f"{today.isoformat()}-{slugify(title)}.md"
    if path.exists():
        raise NewsletterError("that issue already exists", path=str(path), hint="pick another title or edit it")
    issues_dir.mkdir(parents=True, exist_ok=True)
    quoted = title.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(
        f'---\nsubject: "{quoted}"\npreheader: ""\ndate: {today.isoformat()}\n'
        f'# send_at: {today.isoformat()}T08:00:00+00:00\n# segment: weekly\n---\n'
        'Hi {{ subscriber.name | default("there") }},\n\nA line or two to introduce this issue.\n\n'
        '## First story\n\nWhat happened, and why it matters.\n\n'
        '## Second story\n\nAnother item. [A link](https://example.com).\n\n'
        '## Wrapping up {-}\n\nThanks for reading.\n', encoding="utf-8")
    return path
