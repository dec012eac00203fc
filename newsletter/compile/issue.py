"""Read an issue file: YAML front matter between ``---`` lines, then Markdown."""

from __future__ import annotations

import datetime as dt
import difflib
import re
from pathlib import Path

import yaml

from ..config import NUMBERING
from ..errors import IssueError
from ..models import Issue

KNOWN_KEYS = ("subject", "preheader", "title", "date", "send_at", "template", "numbering", "signature", "segment",
              "id", "cta", "example")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FENCE = re.compile(r"^---\s*$")


def load_issue(path: Path | str) -> Issue:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IssueError("no such issue file", path=str(path),
                         hint="give the path of an issue, e.g. issues/2026-11-30-weekly.md, or its id") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise IssueError(f"not UTF-8 (byte {err.start})", path=str(path), line=line,
                         hint="save the file as UTF-8") from None
    return parse_issue(text.replace("\r\n", "\n"), str(path))


def parse_issue(text: str, path: str = "issue.md") -> Issue:
    lines = text.split("\n")
    if not lines or not _FENCE.match(lines[0]):
        raise IssueError("no front matter", path=path, line=1,
                         hint="start the file with a line '---', then 'subject: ...', then a closing '---'")
    end = next((i for i in range(1, len(lines)) if _FENCE.match(lines[i])), None)
    if end is None:
        raise IssueError("front matter is not closed", path=path, line=1,
                         hint="add a line '---' after the last front matter key")
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        hint = "values containing ': ' or starting with a quote need to be quoted"
        opened = getattr(err, "context_mark", None)
        if opened is not None and "quoted scalar" in (getattr(err, "context", None) or ""):
            problem, mark = f"a quote opened on this line is never closed ({problem})", opened  # not the end's line
            hint = "close the quote at the end of the value, or leave the value unquoted"
        raise IssueError(f"front matter is not valid YAML: {problem}", path=path,
                         line=mark.line + 2 if mark else 1, hint=hint) from None
    except ValueError as err:  # PyYAML reads 2026-13-01 as a date and fails on it
        line = next((n for n, text in enumerate(lines[1:end], 2) if re.search(r"\d{4}-\d{1,2}-\d{1,2}", text)), 1)
        raise IssueError(f"front matter has an impossible date: {err}", path=path, line=line,
                         hint="write dates as YYYY-MM-DD with a real month and day") from None
    if not isinstance(meta, dict):
        raise IssueError("front matter must be 'key: value' lines", path=path, line=2)
    key_lines = {m.group(1): n for n, line in enumerate(lines[1:end], 2)
                 if (m := re.match(r"^([A-Za-z_][\w-]*)\s*:", line))}

    def where(key: str) -> int:
        return key_lines.get(key, 1)

    def text_value(key: str, default: str = "") -> str:
        value = meta.get(key, default)
        if value is None:
            return default
        if isinstance(value, (dict, list)):
            raise IssueError(f"front matter '{key}' must be text", path=path, line=where(key))
        return str(value).strip()

    subject = text_value("subject")
    if not subject:
        raise IssueError("front matter has no subject", path=path, line=where("subject") if "subject" in meta else 1,
                         hint="add a line like 'subject: \"This week: ...\"' between the '---' lines")
    if "\n" in subject or "\r" in subject:
        raise IssueError("subject must be one line", path=path, line=where("subject"),
                         hint="a subject is an email header: write it on one line (YAML folds `>` blocks, keeps `|`)")
    issue_id = text_value("id") or Path(path).stem
    if not _SAFE_ID.match(issue_id):
        raise IssueError(f"issue id {issue_id!r} may use only letters, digits, '.', '_' and '-'",
                         path=path, line=where("id"))
    template = text_value("template")
    if template and not re.match(r"^[\w-]+$", template):
        raise IssueError(f"template {template!r} must be a layout name like 'digest'", path=path,
                         line=where("template"))

    return Issue(
        id=issue_id,
        path=path,
        subject=subject,
        body="\n".join(lines[end + 1:]),
        body_line=end + 2,
        preheader=text_value("preheader"),
        title=text_value("title") or subject,
        date=_date(meta.get("date"), path, where("date")),
        send_at=_send_at(meta.get("send_at"), path, where("send_at")),
        template=template,
        numbering=_numbering(meta.get("numbering"), path, where("numbering")),
        signature=_lines(meta, "signature") if isinstance(meta.get("signature"), list) else text_value("signature"),
        example=_flag(meta.get("example"), "example", path, where("example")),
        segment=text_value("segment"),
        cta=_cta(meta.get("cta"), path, where("cta")),
        front_matter=meta,
        front_matter_lines=key_lines,
    )


def _date(value, path: str, line: int) -> str:
    if value in (None, ""):
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise IssueError(f"date {value!r} is not a date", path=path, line=line,
                         hint="write it as YYYY-MM-DD") from None


def _flag(value, key: str, path: str, line: int) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise IssueError(f"front matter '{key}' must be true or false, not {value!r}", path=path, line=line)
    return value


def _numbering(value, path: str, line: int) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):  # YAML 1.1 reads a bare on/off as a boolean
        return "on" if value else "off"
    if str(value).strip().lower() not in NUMBERING:
        raise IssueError(f"numbering {value!r} is not one of {', '.join(NUMBERING)}", path=path, line=line,
                         hint="auto uses the numbers you wrote (else numbers every section), on numbers every "
                              "section, off numbers none")
    return str(value).strip().lower()


def _send_at(value, path: str, line: int) -> dt.datetime | None:
    if value in (None, ""):
        return None
    when = value
    if not isinstance(when, dt.datetime):
        try:
            when = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise IssueError(f"send_at {value!r} is not an ISO 8601 time", path=path, line=line,
                             hint="write it like 2026-11-30T08:00:00+01:00") from None
    if when.tzinfo is None:
        raise IssueError(f"send_at {value!s} has no time zone", path=path, line=line,
                         hint="add the offset, e.g. 2026-11-30T08:00:00+01:00 or ...Z for UTC")
    return when


def _cta(value, path: str, line: int) -> dict[str, str] | None:
    if value in (None, ""):
        return None
    if not isinstance(value, dict) or not value.get("text") or not value.get("url"):
        raise IssueError("cta must have 'text' and 'url'", path=path, line=line,
                         hint="cta:\\n  text: Read the report\\n  url: https://example.com/report")
    return {"text": str(value["text"]), "url": str(value["url"])}


def resolve_issue_path(ref: str, issues_dir: Path) -> Path:
    """An issue given by path, by bare file name (``2026-12-03-x.md``, in ``issues_dir``) or by id
    (front matter ``id`` or file stem). One that is none of these is "no such issue", with the closest
    names in ``issues_dir``."""
    path = Path(ref)
    if path.exists():
        return path
    if path.suffix == ".md" and len(path.parts) == 1 and (issues_dir / path).exists():
        return issues_dir / path
    candidate = issues_dir / f"{ref}.md"
    if path.suffix != ".md" and len(path.parts) == 1:
        if candidate.exists():
            return candidate
        for md in sorted(issues_dir.glob("*.md")):
            if _declared_id(md) == ref:
                return md
    names = _issue_names(issues_dir)
    close = difflib.get_close_matches(path.stem if path.suffix == ".md" else ref, names, n=3, cutoff=0.5)
    guess = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    listed = f"{len(names)} issue(s) in {issues_dir}" if names else f"no issue in {issues_dir} yet"
    hint = f"{guess}give the issue file's path, its file name or its id (front matter 'id', else the file name); {listed}"
    if len(path.parts) > 1:  # a path: name it as given
        raise IssueError("no such issue file", path=ref, hint=hint)
    raise IssueError(f"no such issue {ref!r}", hint=hint)


def _lines(meta: dict, key: str) -> str:
    """A front matter list of one-line values (``signature:`` as ``- Ada`` lines) as lines of text."""
    return "\n".join(str(item).strip() for item in meta[key] if item is not None and not isinstance(item, (dict, list)))


def files_with_id(issue_id: str, issues_dir: Path, *, besides: Path | str) -> list[Path]:
    """The issue files in ``issues_dir`` other than ``besides`` whose id (front matter ``id``, else the file
    name) is ``issue_id``."""
    own = Path(besides).resolve()
    return [md for md in sorted(issues_dir.glob("*.md"))
            if md.resolve() != own and (_declared_id(md) or md.stem) == issue_id]


def _declared_id(md: Path) -> str:
    head = md.read_text(encoding="utf-8-sig", errors="replace")[:2000]
    found = re.search(r"(?m)^id:\s*['\"]?([^'\"\n]*?)['\"]?\s*$", head)
    return found.group(1) if found else ""


def _issue_names(issues_dir: Path) -> list[str]:
    """Every name an issue in ``issues_dir`` answers to: file stems and declared ids."""
    names = []
    for md in sorted(issues_dir.glob("*.md")):
        names.append(md.stem)
        if (declared := _declared_id(md)) and declared != md.stem:
            names.append(declared)
    return names
