"""`newsletter subscribers import`: merging, mapping, and every bad input refused with its exact message."""

import codecs
from pathlib import Path

import pytest

from newsletter.subscribers.reader import iter_subscribers

LIST = Path("subscribers/subscribers.csv")
ORIGINAL = (
    "email,name,status,tags,subscribed_at,city\n"
    "ada@example.com,Ada Lovelace,subscribed,weekly;founders,2026-01-04,London\n"
    "grace@example.org,Grace Hopper,subscribed,weekly,2026-02-11,Arlington\n"
    "linus@example.net,,subscribed,weekly,2026-03-20,\n"
    '"margaret@example.com","Margaret Hamilton, MIT",subscribed,weekly;founders,2026-05-02,Boston\n'
    "alan@example.com,Alan Turing,unsubscribed,weekly,2026-01-09,Manchester\n"
)


NOW = "2026-12-01T09:00:00Z"


@pytest.fixture(autouse=True)
def known_list(workspace, monkeypatch):
    assert LIST.read_text() == ORIGINAL  # the example list these tests are written against
    monkeypatch.setattr("newsletter.subscribers.importer.utc_now", lambda: NOW)  # new rows' subscribed_at


def imported(run, content: bytes | str, *args):
    Path("in.csv").write_bytes(content.encode() if isinstance(content, str) else content)
    return run("subscribers", "import", "in.csv", *args)


def refused(run, content: bytes | str, *args) -> str:
    """Import, expect exit 1 with the list byte-for-byte as it was and nothing left behind; the stderr."""
    before = LIST.read_bytes()
    result = imported(run, content, *args)
    assert result.exit_code == 1, result.output
    assert LIST.read_bytes() == before
    assert sorted(p.name for p in LIST.parent.iterdir()) == ["subscribers.csv"]  # no temp or lock file
    assert result.stdout == ""
    return result.stderr


def test_import_maps_columns_merges_and_counts(run):
    result = imported(run, "Email Address,First Name,TAGS\n"
                           "ada@EXAMPLE.com,Ada,vip\n"
                           "new@example.org,Newbie,\n"
                           "linus@example.net,,\n", "--tag", "imported")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "mapped columns: 'Email Address' -> email, 'First Name' -> first_name + name, 'TAGS' -> tags\n"
        "new columns in subscribers/subscribers.csv: first_name\n"
        "in.csv: 1 added, 2 updated, 0 unchanged\n")
    # the header gains the new column; changed rows are rewritten, the others stay byte for byte
    assert LIST.read_text() == (
        "email,name,status,tags,subscribed_at,city,first_name\n"
        "ada@example.com,Ada Lovelace,subscribed,weekly;founders;vip;imported,2026-01-04,London,Ada\n"
        "grace@example.org,Grace Hopper,subscribed,weekly,2026-02-11,Arlington\n"
        "linus@example.net,,subscribed,weekly;imported,2026-03-20,,\n"
        '"margaret@example.com","Margaret Hamilton, MIT",subscribed,weekly;founders,2026-05-02,Boston\n'
        "alan@example.com,Alan Turing,unsubscribed,weekly,2026-01-09,Manchester\n"
        f"new@example.org,Newbie,,imported,{NOW},,Newbie\n")  # stamped, as `add` does; First Name fills name


def test_import_again_changes_nothing_and_does_not_rewrite(run):
    content = "email,name\nada@example.com,Ada Lovelace\ngrace@example.org,\n"
    stat = LIST.stat()
    result = imported(run, content)
    assert result.stdout == "in.csv: 0 added, 0 updated, 2 unchanged\n"
    assert LIST.read_text() == ORIGINAL and LIST.stat().st_ino == stat.st_ino  # not even renamed


def test_import_never_resubscribes_an_address_that_left(run):
    result = imported(run, "email,status,name\nalan@example.com,subscribed,Alan M. Turing\n")
    assert result.exit_code == 0
    assert result.stdout == (
        "kept alan@example.com unsubscribed (an import never re-subscribes; "
        "`newsletter subscribers add alan@example.com --resubscribe` does, if they asked)\n"
        "in.csv: 0 added, 1 updated, 0 unchanged\n")
    assert LIST.read_text().splitlines()[5] == "alan@example.com,Alan M. Turing,unsubscribed,weekly,2026-01-09,Manchester"


def test_import_status_option_applies_to_every_row(run):
    result = imported(run, "email,status\nada@example.com,nonsense\nnew@example.org,\n", "--status", "unsubscribed")
    assert result.exit_code == 0, result.output
    assert result.stdout == "in.csv: 1 added, 1 updated, 0 unchanged\n"
    statuses = {s.email: s.status for s in iter_subscribers(LIST)}
    assert statuses["ada@example.com"] == statuses["new@example.org"] == "unsubscribed"


def test_import_dry_run_counts_and_writes_nothing(run):
    result = imported(run, "email\nnew@example.org\nada@example.com\n", "--dry-run", "--tag", "x")
    assert result.exit_code == 0
    assert result.stdout == ("columns (change one with --map COLUMN=FIELD):\n"
                             "  'email' -> email\n"
                             "in.csv: 1 added, 1 updated, 0 unchanged (dry run: nothing was written)\n")
    assert LIST.read_text() == ORIGINAL
    assert sorted(p.name for p in LIST.parent.iterdir()) == ["subscribers.csv"]


def test_import_refuses_every_bad_row_at_once(run):
    stderr = refused(run, "email,name,status\n"
                          "ada@,Ada,\n"
                          "grace@example.org,Grace,active\n"
                          ",Nobody,\n"
                          "Linus@Example.net,Linus,\n"
                          "linus@example.NET,Linus again,\n"
                          'x@example.com,"Too, many",subscribed,extra\n')
    assert stderr == (
        "Error: in.csv: 5 problem(s); nothing was imported\n"
        "in.csv:2: invalid email address 'ada@': There must be something after the @-sign.\n"
        "in.csv:3: unknown status 'active' (expected one of: subscribed, unsubscribed, bounced, complained; "
        "blank means subscribed)\n"
        "in.csv:4: empty email\n"
        "in.csv:6: duplicate of line 5 (linus@example.net)\n"
        "in.csv:7: 4 values but the header has 3 columns (put a value that contains the delimiter in quotes)\n"
        "Fix them, or pass --skip-invalid to import only the valid rows.\n")


def test_import_skip_invalid_imports_the_rest_and_prints_the_rejects(run):
    result = imported(run, "email,name\nada@,Ada\nnew@example.org,New\n", "--skip-invalid")
    assert result.exit_code == 0
    assert result.stderr == "rejected in.csv:2: invalid email address 'ada@': There must be something after the @-sign.\n"
    assert result.stdout == "in.csv: 1 added, 0 updated, 0 unchanged, 1 rejected\n"
    assert LIST.read_text() == ORIGINAL + f"new@example.org,New,,,{NOW},\n"


def test_import_refuses_a_file_that_is_not_utf8(run):
    stderr = refused(run, "email,name\nada@example.com,Renée\n".encode("latin1"), "--skip-invalid")
    assert stderr == ("Error: in.csv:2: not UTF-8: cannot decode byte 0xe9 at column 20 (byte offset 30) "
                      "(convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8 in.csv > in-utf8.csv)\n")


def test_decoding_error_far_into_the_file_names_its_line_after_a_bom(run):
    rows = "".join(f"user{i}@example.com,Name {i}\r\n" for i in range(2000))  # beyond the first read buffer
    content = codecs.BOM_UTF8 + f"email,name\r\n{rows}".encode() + "x@example.com,Zoë\r\n".encode("cp1252")
    stderr = refused(run, content)
    offset = len(codecs.BOM_UTF8) + len(f"email,name\r\n{rows}x@example.com,Zo".encode())
    assert stderr.startswith(f"Error: in.csv:2002: not UTF-8: cannot decode byte 0xeb at column 17 "
                             f"(byte offset {offset}) (convert")


def test_import_refuses_a_delimiter_it_cannot_tell(run):
    stderr = refused(run, "email|name\nada@example.com|Ada\n")
    assert stderr == ("Error: in.csv:1: the header row 'email|name' seems to be separated by '|': expected ',' "
                      "(';' and tab are recognised too) (save the file as CSV with a comma delimiter)\n")


@pytest.mark.parametrize("header, problem", [
    ("name,city", "no email column in the header row (columns: name, city); name the column of addresses 'email'"),
    ("email,First Name,first_name", "columns 'First Name' and 'first_name' are both subscriber.first_name "
                                    "(rename or delete one)"),
    ("email,,city", "column 2 has no name (name it, or delete the column)"),
])
def test_import_refuses_a_header_it_cannot_use(run, header, problem):
    stderr = refused(run, f"{header}\nada@example.com,a,b\n")
    assert stderr == (f"Error: in.csv: the header row cannot be used\nin.csv:1: {problem}\n"
                      "Fix the header row (the first line) of the file, or say which column is which with "
                      "--map COLUMN=FIELD.\n")


def test_import_refuses_malformed_quoting(run):
    stderr = refused(run, 'email,name\n"ada@example.com"x,Ada\nnew@example.org,"Never\nclosed\n')
    assert stderr == (
        "Error: in.csv: 2 problem(s); nothing was imported\n"
        "in.csv:2: malformed CSV: ',' expected after '\"' (a quote inside a quoted value must be doubled: \"\")\n"
        "in.csv:3: a quoted value that starts on this line is never closed (close the quote, or double a quote "
        "inside a value: \"\"; csv: unexpected end of data); it runs to line 4, so line 4 is inside it\n"
        "Fix them; --skip-invalid cannot skip a quote that swallows the rows after it.\n")
    again = refused(run, 'email,name\nnew@example.org,"Never\nlost@example.org,closed\n', "--skip-invalid")
    assert "it runs to line 3, so line 3 is inside it" in again and "nothing was imported" in again


def test_import_refuses_when_the_list_itself_has_problems(run):
    LIST.write_text(ORIGINAL + "bob@example,Bob,,,,\n")
    stderr = refused(run, "email\nnew@example.org\n")
    assert stderr == (
        "Error: subscribers/subscribers.csv: 1 problem(s) in the list; nothing was imported\n"
        "subscribers/subscribers.csv:7: invalid email address 'bob@example': The part after the @-sign is not "
        "valid. It should have a period.\n"
        "Fix them first (`newsletter subscribers check` lists them).\n")


def test_import_reads_semicolons_tabs_bom_crlf_and_quoted_newlines(run):
    # a line break is fine in a merge field (City), never in a name (test_subscribers_headers.py)
    content = codecs.BOM_UTF8 + ('E-mail;Name;Tags;City\r\n'
                                 '"new@example.org";"Doe; Jane ""JD""";news;"Harbour Road\r\nsecond line"\r\n').encode()
    assert imported(run, content).stdout.endswith("in.csv: 1 added, 0 updated, 0 unchanged\n")
    assert imported(run, "email\tname\nada@example.com\tAda, Countess of Lovelace\n").exit_code == 0
    people = {s.email: s for s in iter_subscribers(LIST)}
    assert people["new@example.org"].name == 'Doe; Jane "JD"'
    assert people["new@example.org"].fields["city"] == "Harbour Road\r\nsecond line"
    assert people["new@example.org"].tags == ("news",)
    assert people["ada@example.com"].name == "Ada, Countess of Lovelace"
    assert LIST.read_bytes().endswith(
        f'\nnew@example.org,"Doe; Jane ""JD""",,news,{NOW},"Harbour Road\r\nsecond line"\n'.encode())


def test_import_creates_a_missing_list_from_the_file(run):
    LIST.unlink()
    LIST.parent.rmdir()
    assert imported(run, "email\nada@example.com\n", "--dry-run").exit_code == 0
    assert not LIST.parent.exists()  # a dry run creates nothing
    result = imported(run, "Email,Name,Company\nada@example.com,Ada,Analytical Engines\n")
    assert result.exit_code == 0, result.output
    assert LIST.read_text() == f"email,name,company,subscribed_at\nada@example.com,Ada,Analytical Engines,{NOW}\n"


def test_import_stamps_only_new_subscribed_rows_that_do_not_say_since_when(run):
    result = imported(run, "email,name,status,subscribed_at\n"
                           "ada@example.com,Ada Lovelace,,\n"  # already in the list: keeps its own date
                           "new@example.org,New,,\n"
                           "dated@example.org,Dated,,2025-06-01\n"
                           "left@example.org,Left,unsubscribed,\n")  # never subscribed here: no date invented
    assert result.stdout == "in.csv: 3 added, 0 updated, 1 unchanged\n"
    assert LIST.read_text() == ORIGINAL + (f"new@example.org,New,,,{NOW},\n"
                                           "dated@example.org,Dated,,,2025-06-01,\n"
                                           "left@example.org,Left,unsubscribed,,,\n")


def test_import_adds_a_subscribed_at_column_only_for_new_rows(run):
    LIST.write_text("email,name\nada@example.com,Ada\n")
    assert imported(run, "email,name\nada@example.com,Ada\n").stdout == "in.csv: 0 added, 0 updated, 1 unchanged\n"
    assert LIST.read_text() == "email,name\nada@example.com,Ada\n"  # no new row: the header is left alone
    result = imported(run, "email,name\nada@example.com,Ada\nnew@example.org,New\n")
    assert result.stdout == ("new columns in subscribers/subscribers.csv: subscribed_at\n"
                             "in.csv: 1 added, 0 updated, 1 unchanged\n")
    assert LIST.read_text() == f"email,name,subscribed_at\nada@example.com,Ada\nnew@example.org,New,{NOW}\n"


def test_import_of_a_file_with_a_trailing_delimiter_on_every_line(run):
    # European Excel writes "Email;Name;City;" once a cell right of the data was touched: it was refused.
    result = imported(run, "\ufeffEmail;Name;City;\r\nnew@example.org;Neu;Wien;\r\nother@example.org;Anders;;\r\n")
    assert result.exit_code == 0, result.output
    assert "2 added" in result.output
