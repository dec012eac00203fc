"""Property tests: the fast address check agrees with email-validator; export -> import round-trips any list
(new subscribed rows without a subscribed_at gaining one); the lean walk a plan takes picks the readers
the subscribers themselves would."""

import codecs
import tempfile
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.errors import SubscriberError
from newsletter.subscribers.csvfile import Dialect, RowFormatter
from newsletter.subscribers.export import export_columns, write_csv
from newsletter.subscribers.importer import import_subscribers
from newsletter.subscribers.reader import (STATUSES, address_key, eligible, iter_eligible_keys, iter_subscribers,
                                          normalise_address, validate_list)


def verdict(check, value):
    try:
        return check(value)
    except EmailNotValidError as err:
        return f"refused: {err}"


def library(value: str) -> str:
    return validate_email(value.strip(), check_deliverability=False).normalized


@pytest.mark.parametrize("value", [
    "ada@example.com", " Ada@EXAMPLE.com ", "Info@Example.com", "POSTMASTER@example.org", "user+tag@sub.example.co.uk",
    "a@xn--bcher-kva.example", "jöhn@bücher.example", "a@localhost", "a@foo.test", "a@example.local", "a@b",
    "a..b@example.com", ".a@example.com", "a@-example.com", "a@example.com.", "a@[192.0.2.1]", "Ada <a@example.com>",
    '"a b"@example.com', "a@ab--cd.example", "a＠example.com", "a@example.123", "",
    "x" * 64 + "@example.com", "x" * 65 + "@example.com", "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com",
    "x" * 60 + "@" + ".".join(["d" * 60] * 3) + ".com", "x" * 50 + "@" + ".".join(["d" * 60] * 3) + ".com",
])
def test_fast_path_agrees_with_email_validator_on_known_cases(value):
    assert verdict(normalise_address, value) == verdict(library, value)


PIECES = ["a", "B", "z9", ".", "..", "@", "-", "_", "+", "'", " ", '"', "é", "日本", "xn--", "ab--",
          "example", "EXAMPLE", "com", "test", "local", "localhost", "postmaster", "Info", "1", "ß", "\u0301"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
def test_fast_path_agrees_with_email_validator(value):
    assert verdict(normalise_address, value) == verdict(library, value)


@settings(max_examples=300, deadline=None)
@given(local=st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9_+-]{1,8}){0,2}", fullmatch=True),
       labels=st.lists(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True),
                       min_size=1, max_size=4),
       tld=st.sampled_from(["com", "ORG", "example", "test", "local", "co.uk", "xn--p1ai", "123"]))
def test_fast_path_agrees_on_plausible_addresses(local, labels, tld):
    value = f"{local}@{'.'.join(labels)}.{tld}"
    assert verdict(normalise_address, value) == verdict(library, value)


# -- round trip -------------------------------------------------------------------------------------
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=25).map(str.strip)
# A name goes into the To header: no line break or other control character (those rows are refused).
NAME_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=25).map(str.strip)
# `import` splits tags on "," as well as ";" (Mailchimp's "weekly, vip") and takes off the quotes around
# one (Mailchimp's "weekly","vip"), so a tag holds no ";" or "," and is not in quotes
TAG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=";,"), min_size=1, max_size=10
              ).map(str.strip).filter(lambda t: t and not (len(t) > 1 and t[0] == t[-1] == '"'))
SPECIMENS = ['Hamilton, "Maggie"', "line one\r\nline two", "bare\rreturn", "🎉 emoji", "日本語の名前", "Zoë; Ørsted",
             "tab\there", '""', "   "]
FIELD = st.one_of(TEXT, st.sampled_from(SPECIMENS).map(str.strip))  # merge fields may hold line breaks
NAME = st.one_of(NAME_TEXT, st.sampled_from([s for s in SPECIMENS if s.isprintable() or not s.strip()]).map(str.strip))
NOW = "2026-12-01T09:00:00Z"
LOCAL = st.from_regex(r"[a-zA-Z0-9_+'-]{1,12}(\.[a-z0-9]{1,5})?", fullmatch=True) | st.sampled_from(
    ["jöhn", "日本", "Ünïcode.name"])
DOMAIN = st.sampled_from(["example.com", "EXAMPLE.org", "bücher.example", "xn--bcher-kva.example", "mail.example.co.uk"])
PERSON = st.fixed_dictionaries({
    "email": st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN),
    "name": NAME,
    "status": st.sampled_from(["", *STATUSES, "Bounced"]),
    "tags": st.lists(TAG, max_size=3).map(";".join),
    "city": FIELD,
    "Company Name": FIELD,
    "subscribed_at": st.sampled_from(["", "2026-01-04"]),
})
DIALECT = st.builds(Dialect, st.sampled_from([",", ";", "\t"]), st.sampled_from(["\n", "\r\n"]), st.booleans())


def unique(people):
    seen, kept = set(), []
    for person in people:
        key = address_key(normalise_address(person["email"]))
        if key not in seen:
            seen.add(key)
            kept.append(person)
    return kept


def write_list(path: Path, people: list[dict], dialect: Dialect) -> None:
    row = RowFormatter(dialect)
    columns = ["email", "name", "status", "tags", "city", "Company Name", "subscribed_at"]
    text = row(columns) + "".join(row(p[c] for c in columns) for p in people)
    path.write_bytes((codecs.BOM_UTF8 if dialect.bom else b"") + text.encode())


def export(path: Path) -> str:
    out: list[str] = []
    write_csv(iter_subscribers(path), export_columns(path), out.append)
    return "".join(out)


def seen_as(path: Path) -> list[tuple]:
    return [(s.email, s.name, s.status, s.tags, dict(s.fields)) for s in iter_subscribers(path)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people=st.lists(PERSON, max_size=8).map(unique), dialect=DIALECT)
def test_export_then_import_round_trips_any_list(people, dialect):
    with tempfile.TemporaryDirectory() as folder:
        original, exported, copy = Path(folder, "list.csv"), Path(folder, "export.csv"), Path(folder, "copy.csv")
        write_list(original, people, dialect)
        assert validate_list(original) == []
        exported.write_text(export(original), newline="")
        result = import_subscribers(copy, exported, now=NOW)
        assert (result.added, result.updated, result.rejected) == (len(people), 0, [])
        write_list(original, [{**p, "subscribed_at": p["subscribed_at"] or (
            NOW if p["status"].lower() in ("", "subscribed") else "")} for p in people], dialect)  # as imported
        assert seen_as(copy) == seen_as(original)
        assert export(copy) == export(original)
        assert [s["name"] for s in people] == [s.name for s in iter_subscribers(copy)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people=st.lists(PERSON, max_size=8).map(unique), dialect=DIALECT,
       segment=st.one_of(st.none(), st.sampled_from(["", "weekly", "WEEKLY", " vip", "Zoë", "SS"]), TAG))
def test_the_plans_lean_walk_picks_whom_the_subscribers_would(people, dialect, segment):
    people = [{**p, "status": p["status"] if p["status"] != "Bounced" else "bounced"} for p in people]
    for n, person in enumerate(people):  # most of them in a sampled segment, in any case and spacing
        extra = [" Weekly ", "VIP", "zoë", "ß", ""][n % 5]  # "ß" is "SS" only casefolded, as in_segment compares
        person["tags"] = ";".join(filter(None, [person["tags"], extra]))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "list.csv")
        write_list(path, people, dialect)
        assert validate_list(path) == []
        assert list(iter_eligible_keys(path, segment)) == [
            address_key(s.email) for s in iter_subscribers(path) if eligible(s, segment)]


@pytest.mark.parametrize("segment", [None, "", "weekly", "WEEKLY", "SS", "vip", "none"])
def test_the_plans_lean_walk_on_a_list_of_every_kind_of_row(tmp_path, segment):
    path = tmp_path / "list.csv"
    path.write_text("email,name,status,tags\n"
                    "a@example.com,A,,weekly\n"
                    "b@example.com,B,Unsubscribed,weekly\n"
                    "c@example.com,C,SUBSCRIBED, Weekly ; vip \n"
                    "d@example.com,D,subscribed,ß\n"
                    "\n"
                    "E@Example.com,E,,\n"
                    "f@example.com,F,bounced,vip\n"
                    "g@example.com,G\n", encoding="utf-8")
    assert list(iter_eligible_keys(path, segment)) == [
        address_key(s.email) for s in iter_subscribers(path) if eligible(s, segment)]


def test_the_plans_lean_walk_refuses_an_invalid_row_as_the_subscribers_walk_does_unless_skipped(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email,name\na@example.com,A\nnot-an-address,B\nc@example.com,C\n", encoding="utf-8")
    for walk in (lambda skip: list(iter_eligible_keys(path, None, skip=skip)),
                 lambda skip: [s.email for s in iter_subscribers(path, skip=skip)]):
        with pytest.raises(SubscriberError) as refused:
            walk(())
        assert refused.value.line == 3 and "not-an-address" in str(refused.value)
        assert "subscribers check" in refused.value.hint
        assert walk(validate_list(path)) == ["a@example.com", "c@example.com"]
