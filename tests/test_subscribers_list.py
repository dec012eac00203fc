"""The reading API the send loop and the build use: validate_list, check_list, iter_subscribers, eligible."""

from pathlib import Path

import pytest

from newsletter.subscribers import reader as module
from newsletter.errors import SubscriberError
from newsletter.models import Subscriber
from newsletter.subscribers.reader import (
    Problem,
    check_list,
    eligible,
    iter_subscribers,
    load_subscribers,
    merge_columns,
    normalise_column,
    validate_list,
)

BAD = ("email,name,status,tags,First Name\n"
       "ada@example.com,Ada,subscribed,weekly,Ada\n"
       "grace@,Grace,,weekly,\n"
       "linus@example.net,Linus,gone,,\n"
       "\n"
       "ADA@example.com,Ada again,,,\n")


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "list.csv"
    path.write_text(text)
    return path


def test_validate_list_reports_every_problem_in_line_order(tmp_path):
    path = write(tmp_path, BAD)
    assert [str(p) for p in validate_list(path)] == [
        f"{path}:3: invalid email address 'grace@': There must be something after the @-sign.",
        f"{path}:4: unknown status 'gone' (expected one of: subscribed, unsubscribed, bounced, complained; "
        "blank means subscribed)",
        f"{path}:6: duplicate of line 2 (ADA@example.com)",
    ]
    assert [(p.line, p.email, p.fatal) for p in validate_list(path)] == [
        (3, "grace@", False), (4, "linus@example.net", False), (6, "ADA@example.com", False)]


def test_duplicates_are_exact_even_when_the_filter_says_maybe_for_everything(tmp_path, monkeypatch):
    monkeypatch.setattr(module._BloomFilter, "add", lambda self, item: True)  # every address a candidate
    rows = "".join(f"user{i}@example.com\n" for i in range(50))
    path = write(tmp_path, f"email\n{rows}User7@Example.com\nuser3@example.com\n")
    assert [str(p) for p in validate_list(path)] == [f"{path}:52: duplicate of line 9 (User7@example.com)",
                                                     f"{path}:53: duplicate of line 5 (user3@example.com)"]


def test_bloom_filter_says_new_for_new_items_and_maybe_for_repeats():
    seen = module._BloomFilter(1 << 16)
    assert not any(seen.add(f"user{i}@example.com") for i in range(1000))
    assert all(seen.add(f"user{i}@example.com") for i in range(1000))


def test_the_filter_grows_with_a_small_list_and_stops_at_its_cap():
    assert module.bloom_bits(650_000) == 2_600_000  # 10,000 rows of 65 bytes: 4 bits a byte
    assert module.bloom_bits(65_000_000) == module.BLOOM_MAX_BITS == 1 << 26  # 1M rows: 8 MB, not 32
    assert module.bloom_bits(10) == 1 << 16


def test_iter_subscribers_streams_valid_rows_and_refuses_an_invalid_one(tmp_path):
    path = write(tmp_path, BAD)
    stream = iter_subscribers(path)
    first = next(stream)
    assert first == Subscriber(email="ada@example.com", name="Ada", status="subscribed", tags=("weekly",), line=2,
                               fields={"email": "ada@example.com", "name": "Ada", "status": "subscribed",
                                       "tags": "weekly", "first_name": "Ada"})
    with pytest.raises(SubscriberError) as caught:
        next(stream)
    assert str(caught.value) == (f"{path}:3: invalid email address 'grace@': There must be something after the "
                                 "@-sign. (`newsletter subscribers check` lists every problem)")


def test_check_list_raises_with_every_problem_or_returns_them_to_skip(tmp_path):
    path = write(tmp_path, BAD)
    with pytest.raises(SubscriberError) as caught:
        check_list(path)
    assert str(caught.value).splitlines() == [
        f"{path}: 3 problem(s) in the subscriber list",
        *(str(p) for p in validate_list(path)),
        "Fix them (`newsletter subscribers check` lists them again), or pass --skip-invalid to skip those rows."]
    problems = check_list(path, skip_invalid=True)
    assert [s.line for s in iter_subscribers(path, skip=problems)] == [2]  # the duplicate is skipped too


def test_a_problem_with_the_file_cannot_be_skipped(tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(b"email,name\nada@example.com,Ada\nbob@example.com,Bj\xf6rn\n")
    problems = validate_list(path)
    assert problems == [Problem(str(path), 3, "not UTF-8: cannot decode byte 0xf6 at column 19 (byte offset 49) "
                                              f"(convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > "
                                              "list-utf8.csv)", fatal=True)]
    with pytest.raises(SubscriberError, match="--skip-invalid cannot skip a problem with the file itself"):
        check_list(path, skip_invalid=True)


def test_header_problems_are_fatal(tmp_path):
    path = write(tmp_path, "name\nAda\n")
    assert validate_list(path) == [Problem(str(path), 1, "no email column in the header row (columns: name); name "
                                                         "the column of addresses 'email'", fatal=True)]
    assert validate_list(write(tmp_path, "")) == [
        Problem(str(path), 1, "the file is empty: the first row must be a header with an email column", fatal=True)]


def test_a_missing_list_is_an_error_with_a_hint(tmp_path):
    with pytest.raises(SubscriberError, match="subscriber list not found"):
        validate_list(tmp_path / "nope.csv")


@pytest.mark.parametrize("status, tags, segment, expected", [
    ("subscribed", (), None, True),
    ("subscribed", ("weekly",), "weekly", True),
    ("subscribed", ("Weekly",), "weekly", True),  # tags compare case-insensitively
    ("subscribed", ("weekly",), "daily", False),
    ("subscribed", (), "", True),
    ("unsubscribed", ("weekly",), "weekly", False),
    ("bounced", (), None, False),
    ("complained", (), None, False),
])
def test_eligible(status, tags, segment, expected):
    assert eligible(Subscriber(email="a@example.com", status=status, tags=tags), segment) is expected


def test_blank_status_is_subscribed_and_status_is_case_insensitive(tmp_path):
    path = write(tmp_path, "email,status,tags\na@example.com,,x; y ;;\nb@example.com,Bounced,\n")
    a, b = iter_subscribers(path)
    assert (a.status, a.tags, b.status) == ("subscribed", ("x", "y"), "bounced")


def test_a_row_of_only_delimiters_is_blank_as_spreadsheets_leave_cleared_rows(tmp_path):
    path = write(tmp_path, "Email ,Name,Tags\r\na@example.com,A,weekly\r\n,,\r\nb@example.com,B,\r\n,,\r\n")
    assert validate_list(path) == []
    assert [(s.email, s.line) for s in iter_subscribers(path)] == [("a@example.com", 2), ("b@example.com", 4)]


def test_a_trailing_delimiter_as_european_excel_writes_it_is_no_column(tmp_path):
    path = write(tmp_path, "\ufeffEmail;Name;Tags;City;\r\na@example.com;Anna;weekly;Wien;\r\nb@example.com;Bert;;;;\r\n")
    assert validate_list(path) == []
    assert [(s.email, s.name, s.fields["city"]) for s in iter_subscribers(path)] == [
        ("a@example.com", "Anna", "Wien"), ("b@example.com", "Bert", "")]
    bad = write(tmp_path, "Email;Name;\na@example.com;Anna;stray\n")  # a value under no column: still refused
    assert [p.reason for p in validate_list(bad)] == [
        "3 values but the header has 2 columns (put a value that contains the delimiter in quotes)"]


def test_load_subscribers_leaves_invalid_rows_out_for_builds(tmp_path):
    path = write(tmp_path, BAD)
    assert [s.line for s in load_subscribers(path)] == [2, 6]  # builds need samples, not a verdict
    assert merge_columns(path) == {"email", "name", "status", "tags", "first_name"}
    assert merge_columns(tmp_path / "missing.csv") == {"email"}


def test_normalise_column():
    assert [normalise_column(n) for n in ("First Name", " E-mail ", "2nd line", "", "city")] == [
        "first_name", "e_mail", "col_2nd_line", "col_", "city"]
