"""``init`` and ``new``: create a workspace and new issues from the bundled example."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import unicodedata
from importlib import resources
from pathlib import Path

from anyascii import anyascii

from .errors import NewsletterError

GITIGNORE = ("# newsletter: generated mail and the delivery ledger (personal data) stay out of git\n"
             ".newsletter/\noutbox/\n# `newsletter build` output (a sample .eml holds a real subscriber's address)\nout/\n"
             "# a subscriber-list lock left by a killed command\nsubscribers/.*.lock\n")
EXAMPLE_ISSUE = "issues/2026-11-30-weekly.md"
WORKSPACE_FILES = ("newsletter.toml", "subscribers/subscribers.csv", EXAMPLE_ISSUE)
# Written into the example's front matter as `init` copies it (docs/authoring.md#the-web-archive).
EXAMPLE_MARK = b"example: true   # newsletter init's example: `archive --all` leaves it out; delete this line to publish it\n"


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


def layout_choices() -> list[str]:
    """The bundled layouts' names, for ``init --template``."""
    return sorted(p.stem for p in (bundled_workspace() / "templates").glob("*.mjml"))


def init_workspace(target: Path, *, force: bool = False, template: str = "") -> list[tuple[str, Path]]:
    """Copy the example workspace into ``target``; returns (what happened, path) pairs.

    Nothing that exists is overwritten unless ``force``; even then the subscriber list (your
    readers) is never replaced, and every replaced file is kept beside it as ``<name>.bak``.
    ``template``: the bundled layout the new config names as ``[newsletter] template``.
    """
    if (target / "newsletter.toml").exists() and not force:
        raise NewsletterError("a workspace already exists here", path=str(target / "newsletter.toml"),
                              hint="use --force to rewrite its config, layouts and example issue "
                                   "(old versions kept as .bak; the subscriber list is never touched)")
    if template and template not in layout_choices():
        raise NewsletterError(f"there is no bundled layout {template!r}",
                              hint=f"choose one of {', '.join(layout_choices())}")
    source = bundled_workspace()
    pairs = [(source / relative, target / relative) for relative in WORKSPACE_FILES]
    pairs += [(layout, target / "templates" / layout.name) for layout in sorted((source / "templates").glob("*.mjml"))]
    done = []
    for origin, dest in pairs:
        content = origin.read_bytes()
        if origin == source / EXAMPLE_ISSUE:
            content = _mark_example(content)
        if origin == source / "newsletter.toml" and template:  # chosen before comparing: a change keeps its .bak
            content = _with_layout(content, template, dest)
        if dest.exists():
            if dest.read_bytes() == content:
                done.append(("unchanged", dest))
                continue
            if not force or dest.name == "subscribers.csv":
                done.append(("kept", dest))
                continue
            shutil.copyfile(dest, dest.with_name(dest.name + ".bak"))
            done.append(("replaced (old one in .bak)", dest))
        else:
            done.append(("created", dest))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
    gitignore = target / ".gitignore"
    existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    if ".newsletter/" not in existing:
        gitignore.write_text(existing + ("\n" if existing and not existing.endswith("\n") else "") + GITIGNORE,
                             encoding="utf-8")
        done.append(("created" if not existing else "updated", gitignore))
    return done


def _mark_example(issue: bytes) -> bytes:
    """The example issue with ``example: true`` as the front matter's first key."""
    fence, newline, rest = issue.partition(b"\n")
    return fence + newline + EXAMPLE_MARK + rest if fence.strip() == b"---" else issue


def _with_layout(config: bytes, template: str, config_file: Path) -> bytes:
    """The bundled config with ``template = "NAME"`` in its [newsletter] table (comments kept)."""
    changed, count = re.subn(rb'(?m)^template\s*=\s*"[^"]*"', f'template = "{template}"'.encode(), config, count=1)
    if not count:
        raise NewsletterError("the bundled newsletter.toml has no 'template = ...' line", path=str(config_file))
    return changed


SLUG_MAX = 60


def slugify(title: str) -> str:
    """ASCII file-name slug, transliterated (docs/authoring.md#a-new-issue): "微信 AI 内容" ->
    "weixin-ai-neirong", "Zoë" -> "zoe"; cut at a word boundary, never inside a word. The slug is the
    issue's id, used in URLs, file names and headers, hence ASCII. A title with nothing to
    transliterate (only symbols) gets a short stable hash."""
    ascii_title = anyascii(unicodedata.normalize("NFC", title))
    words = re.findall(r"[a-z0-9]+", ascii_title.lower())
    slug = ""
    for word in words:
        longer = f"{slug}-{word}" if slug else word
        if len(longer) > SLUG_MAX:
            break
        slug = longer
    if not slug and words:  # one word longer than the limit: nothing to cut at
        slug = words[0][:SLUG_MAX]
    return slug or "issue-" + hashlib.sha1(title.strip().encode()).hexdigest()[:8]


def new_issue(issues_dir: Path, title: str, today: dt.date | None = None) -> Path:
    if not title.strip():
        raise NewsletterError("the title is empty", hint='give one, e.g. newsletter new "Ports go electric"')
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
