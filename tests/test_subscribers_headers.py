"""A subscriber's name and address go into the To header: line breaks and control characters are refused
by the list check, import and add, and by to_mime itself (docs/architecture.md, security)."""

from pathlib import Path

import pytest

from newsletter.compile.mime import to_mime
from newsletter.errors import RecipientError, SubscriberError
from newsletter.models import Message
from newsletter.subscribers.reader import check_list, iter_subscribers, validate_list

LIST = Path("subscribers/subscribers.csv")
HEADER = "email,name,status,tags,subscribed_at,city\n"


def write(tmp_path, rows: str) -> Path:
    path = tmp_path / "list.csv"
    path.write_text(HEADER + rows, newline="")
    return path


@pytest.mark.parametrize("name", ["Eve\nBcc: all@example.com", "Eve\r\nBcc: all@example.com", "Eve\rX",
                                  "Eve\u2028X", "Eve\x85X", "Eve\x0bX"])
def test_a_line_break_in_a_name_is_a_problem_of_its_line(tmp_path, name):
    quoted = name.replace('"', '""')
    path = write(tmp_path, f'ada@example.com,Ada,,,,\neve@example.com,"{quoted}",,,,\n')
    line = 3
    assert [str(p) for p in validate_list(path)] == [f"{path}:{line}: name contains a line break"]


def test_other_control_characters_in_a_name_or_an_address_are_refused_too(tmp_path):
    path = write(tmp_path, 'tab@example.com,"Tab\there",,,,\nnul@example.com,Nul\x00,,,,\n'
                           '"ada@example.com\nBcc: all@example.com",Ada,,,,\n')
    assert [str(p) for p in validate_list(path)] == [
        f"{path}:2: name contains a control character (U+0009)",
        f"{path}:3: name contains a control character (U+0000)",
        f"{path}:4: email contains a line break",
    ]


def test_line_breaks_around_a_name_are_trimmed_like_spaces(tmp_path):
    path = write(tmp_path, 'ada@example.com,"\nAda Lovelace\r\n",,,,\n')
    assert validate_list(path) == []
    assert next(iter_subscribers(path)).name == "Ada Lovelace"


def test_other_columns_may_hold_line_breaks(tmp_path):
    path = write(tmp_path, 'ada@example.com,Ada,,"weekly",,"12 Harbour Road\nBristol"\n')
    assert validate_list(path) == []
    assert next(iter_subscribers(path)).fields["city"] == "12 Harbour Road\nBristol"


def test_sending_refuses_such_a_row_or_skips_it(tmp_path):
    path = write(tmp_path, 'ada@example.com,Ada,,,,\neve@example.com,"Eve\nBcc: all@example.com",,,,\n')
    with pytest.raises(SubscriberError, match="name contains a line break"):
        check_list(path)
    with pytest.raises(SubscriberError, match=":3: name contains a line break"):
        list(iter_subscribers(path))
    assert [s.email for s in iter_subscribers(path, skip=check_list(path, skip_invalid=True))] == ["ada@example.com"]


def test_check_names_the_line(run):
    LIST.write_text(LIST.read_text() + 'eve@example.com,"Eve\nBcc: all@example.com",,,,\n')
    result = run("subscribers", "check")
    assert result.exit_code == 1
    assert result.stderr == ("Error: subscribers/subscribers.csv: 1 problem(s)\n"
                             "subscribers/subscribers.csv:7: name contains a line break\n"
                             "Fix them, then run `newsletter subscribers check` again.\n")


def test_import_refuses_it_all_or_nothing_and_skip_invalid_skips_it(run):
    Path("in.csv").write_text('email,name\nnew@example.org,New\neve@example.com,"Eve\r\nBcc: all@example.com"\n',
                              newline="")
    before = LIST.read_bytes()
    result = run("subscribers", "import", "in.csv")
    assert result.exit_code == 1 and LIST.read_bytes() == before
    assert result.stderr == ("Error: in.csv: 1 problem(s); nothing was imported\n"
                             "in.csv:3: name contains a line break\n"
                             "Fix them, or pass --skip-invalid to import only the valid rows.\n")
    result = run("subscribers", "import", "in.csv", "--skip-invalid")
    assert result.exit_code == 0
    assert result.stderr == "rejected in.csv:3: name contains a line break\n"
    assert [s.email for s in iter_subscribers(LIST)][-1] == "new@example.org"
    assert "eve@" not in LIST.read_text()


@pytest.mark.parametrize("args, error", [
    (["eve@example.com", "--name", "Eve\r\nBcc: all@example.com"],
     "Error: name contains a line break: 'Eve\\r\\nBcc: all@example.com' (a name goes into the To header: give "
     "it on one line)\n"),
    (["eve@example.com", "--name", "Eve\x07"],
     "Error: name contains a control character (U+0007): 'Eve\\x07' (a name goes into the To header: give it "
     "on one line)\n"),
    (["eve@example.com\nBcc: all@example.com"],
     "Error: email contains a line break: 'eve@example.com\\nBcc: all@example.com' (give the address on one "
     "line)\n"),
])
def test_add_refuses_it(run, args, error):
    before = LIST.read_bytes()
    result = run("subscribers", "add", *args)
    assert result.exit_code == 1 and result.stderr == error
    assert LIST.read_bytes() == before


def message(**changes) -> Message:
    values = dict(issue_id="i", to="eve@example.com", subject="Hello", html="<p>Hi</p>", text="Hi",
                  sender="Notes <notes@example.com>", to_name="Eve")
    return Message(**{**values, **changes})


def test_to_mime_writes_a_plain_name():
    assert to_mime(message())["To"] == "Eve <eve@example.com>"


@pytest.mark.parametrize("changes, error", [
    ({"to_name": "Eve\r\nBcc: all@example.com"}, "header To of the message to eve@example.com contains a line break"),
    ({"to_name": "Eve\u2028Bcc: all@example.com"}, "header To of the message to eve@example.com contains a line break"),
    ({"to_name": "Eve\x00"}, "header To of the message to eve@example.com contains a control character (U+0000)"),
    ({"subject": "Hi\nBcc: all@example.com"}, "header Subject of the message to eve@example.com contains a line break"),
    ({"headers": {"List-Unsubscribe": "<https://x>\r\nBcc: y"}},
     "header List-Unsubscribe of the message to eve@example.com contains a line break"),
])
def test_to_mime_refuses_a_line_break_in_any_header_as_a_recipient_error(changes, error):
    with pytest.raises(RecipientError) as caught:
        to_mime(message(**changes))
    assert caught.value.email == "eve@example.com" and caught.value.message == error


def test_to_mime_writes_an_internationalised_domain_in_its_ascii_form():
    """Not an RFC 2047 word inside the address, which no server decodes."""
    mime = to_mime(message(to="bob@exämple.com", to_name="Bob"))
    assert mime["To"] == "Bob <bob@xn--exmple-cua.com>"
    assert "Bob <bob@xn--exmple-cua.com>" in mime.as_string() and "=?utf-8?" not in mime["To"]
    assert to_mime(message(to="eve@bücher.example", to_name=""))["To"] == "eve@xn--bcher-kva.example"


def test_to_mime_refuses_a_local_part_that_is_not_ascii_and_says_why():
    with pytest.raises(RecipientError) as caught:
        to_mime(message(to="zoë@example.com"))
    assert caught.value.message == ("header To of the message to zoë@example.com has a part before the @ that is not "
                                    "ASCII: only a server that speaks SMTPUTF8 can take it, and a standard .eml "
                                    "cannot hold it")


@pytest.mark.parametrize("to", ["eve smith@example.com"])
def test_to_mime_turns_the_email_packages_refusals_into_a_recipient_error(to):
    with pytest.raises(RecipientError) as caught:  # not a bare ValueError / HeaderParseError from the email package
        to_mime(message(to=to))
    assert caught.value.email == to
    assert caught.value.message.startswith(f"the headers of the message to {to} cannot be written: ")
    assert caught.value.hint == "check that subscriber's name and address in the list"
