"""`newsletter subscribers add/unsubscribe/remove/list/count/export/check`, as a user runs them."""

import json
import re
from pathlib import Path

import pytest
from helpers import ledger_env, ledger_tables

from newsletter import config
from newsletter.ledger import open_ledger
from newsletter.ledger.base import erased_key

LIST = Path("subscribers/subscribers.csv")
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def rows(path=LIST):
    return path.read_text().splitlines()


def test_add_appends_a_normalised_row_with_a_timestamp(run):
    result = run("subscribers", "add", " Zed@EXAMPLE.com", "--name", "Zed", "--tag", "weekly", "--tag", "news")
    assert result.exit_code == 0
    assert result.stdout == "added Zed@example.com in subscribers/subscribers.csv\n"
    assert re.fullmatch(rf"Zed@example\.com,Zed,subscribed,weekly;news,{STAMP},", rows()[-1])


def test_add_an_existing_subscriber_updates_or_changes_nothing(run):
    assert run("subscribers", "add", "ADA@example.com").stdout == (
        "ada@example.com is already subscribed (line 2); nothing changed\n")
    assert run("subscribers", "add", "ada@example.com", "--tag", "vip").stdout == (
        "updated ada@example.com (line 2) in subscribers/subscribers.csv\n")
    assert rows()[1] == "ada@example.com,Ada Lovelace,subscribed,weekly;founders;vip,2026-01-04,London"


def test_add_never_resubscribes_silently(run):
    before = LIST.read_bytes()
    result = run("subscribers", "add", "alan@example.com")
    assert result.exit_code == 1
    assert result.stderr == ("Error: subscribers/subscribers.csv:6: alan@example.com is unsubscribed; add them "
                             "again only if they asked to be (pass --resubscribe)\n")
    assert LIST.read_bytes() == before
    result = run("subscribers", "add", "alan@example.com", "--resubscribe")
    assert result.stdout == "resubscribed alan@example.com (line 6) in subscribers/subscribers.csv\n"
    assert rows()[5] == "alan@example.com,Alan Turing,subscribed,weekly,2026-01-09,Manchester"


def test_resubscribe_lifts_the_readers_own_unsubscribe_in_the_ledger_and_nothing_else(run, workspace):
    """A reader who left through their link and asked back would otherwise stay suppressed: left out of every
    send in silence, and marked unsubscribed again by the next `apply-unsubscribes`."""
    assert run("suppressions", "add", "alan@example.com", "--reason", "unsubscribed").exit_code == 0
    assert run("suppressions", "add", "zed@example.com", "--reason", "bounced").exit_code == 0
    back = run("subscribers", "add", "alan@example.com", "--resubscribe")
    assert back.exit_code == 0
    assert re.search(r"lifted the ledger's unsubscribe of alan@example\.com \(source manual, \d{4}-\d\d-\d\d\): issues go "
                     r"to them again", back.stdout)
    assert "alan@example.com" not in run("suppressions", "list").stdout
    assert run("subscribers", "apply-unsubscribes").exit_code == 0
    assert rows()[5].startswith("alan@example.com,Alan Turing,subscribed,")  # not undone
    bounced = run("subscribers", "add", "zed@example.com")  # a bounce is not theirs to lift
    assert bounced.exit_code == 0
    assert ("Warning: zed@example.com is still suppressed in the ledger (bounced, source manual): no issue goes to "
            "them until `newsletter suppressions remove zed@example.com`") in bounced.stderr
    assert "zed@example.com" in run("suppressions", "list").stdout


def test_add_refuses_an_invalid_address(run):
    result = run("subscribers", "add", "bad@")
    assert result.exit_code == 1
    assert result.stderr == "Error: invalid email address 'bad@': There must be something after the @-sign.\n"


def test_unsubscribe_keeps_the_row_with_a_timestamp(run):
    result = run("subscribers", "unsubscribe", "Grace@Example.org")
    assert result.exit_code == 0
    assert result.stdout == "unsubscribed grace@example.org (line 3) in subscribers/subscribers.csv\n"
    assert rows()[0] == "email,name,status,tags,subscribed_at,city,unsubscribed_at"
    assert re.fullmatch(rf"grace@example\.org,Grace Hopper,unsubscribed,weekly,2026-02-11,Arlington,{STAMP}",
                        rows()[2])
    assert rows()[1] == "ada@example.com,Ada Lovelace,subscribed,weekly;founders,2026-01-04,London"  # untouched
    again = run("subscribers", "unsubscribe", "grace@example.org")
    assert again.stdout == "grace@example.org is already unsubscribed (line 3); nothing changed\n"


def test_unsubscribe_an_unknown_address_is_an_error(run):
    result = run("subscribers", "unsubscribe", "nobody@example.org")
    assert result.exit_code == 1
    assert result.stderr == "Error: subscribers/subscribers.csv: nobody@example.org is not in the list\n"


@pytest.mark.usefixtures("ledger_backend")  # on SQLite and on PostgreSQL
def test_remove_deletes_the_row_and_erases_the_ledger(run, workspace):
    settings = config.load(Path("newsletter.toml"), ledger_env())
    with open_ledger(settings) as ledger:
        ledger.create_plan("2026-11-30-weekly", content_hash="h", subject="s", segment="",
                           emails=["ada@example.com", "grace@example.org"])
    result = run("subscribers", "remove", "ADA@example.com")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("removed ada@example.com from subscribers/subscribers.csv (line 2)\n"
                             "ledger: 1 delivery record(s) of ada@example.com now keep only a hash\n")
    assert not any(line.startswith("ada@") for line in rows())
    with open_ledger(settings) as ledger:
        emails = {row.email for row in ledger.rows("2026-11-30-weekly", states=("pending",))}
    assert emails == {"grace@example.org", erased_key("ada@example.com")}
    # already gone from the list: the ledger is still cleaned, and an address found nowhere is an error
    result = run("subscribers", "remove", "ada@example.com")
    assert result.exit_code == 1
    assert result.stdout == ("ada@example.com is not in subscribers/subscribers.csv\n"
                             "ledger: no delivery records of ada@example.com\n")
    assert result.stderr == ("Error: ada@example.com is neither in the list nor in the ledger; nothing was removed "
                             "(check the spelling of the address)\n")


@pytest.mark.usefixtures("ledger_backend")  # on SQLite and on PostgreSQL
def test_remove_erases_the_outbox_files_and_the_provider_id_that_name_the_address(run, workspace):
    assert run("send", "issues/2026-11-30-weekly.md", "--yes").exit_code == 0  # the outbox provider
    sent = workspace / "outbox" / "2026-11-30-weekly"
    batch = next(sent.glob("grace@example.org--*.eml")).name.split("--")[1].removesuffix(".eml")
    (workspace / "outbox" / "proofs").mkdir()
    (workspace / "outbox" / "proofs" / "Grace@Example.ORG--proof-1a2b.eml").write_text("x")  # any case
    (sent / ".grace@example.org--0123abcd.eml.tmp").write_text("x")  # a write a killed run left
    (sent / "grace@example.org--y.com--0123abcd.eml").write_text("x")  # another address (domain "example.org--y.com")
    result = run("subscribers", "remove", "grace@EXAMPLE.org")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("removed grace@example.org from subscribers/subscribers.csv (line 3)\n"
                             "ledger: 1 delivery record(s) of grace@example.org now keep only a hash\n"
                             "outbox: deleted 3 message file(s) of grace@example.org\n")
    left = sorted(p.name for p in (workspace / "outbox").rglob("*"))
    assert left == sorted(["2026-11-30-weekly", "proofs", "grace@example.org--y.com--0123abcd.eml",
                           *(f"{a}--{batch}.eml" for a in ("ada@example.com", "linus@example.net", "margaret@example.com"))])
    settings = config.load(Path("newsletter.toml"), ledger_env())
    with open_ledger(settings) as ledger:
        rows = {row.email: row for row in ledger.rows("2026-11-30-weekly", states=("sent",))}
    assert rows[erased_key("grace@example.org")].provider_id == f"[erased]--{batch}.eml"
    if ledger_env():  # PostgreSQL: in no table, no column (old row versions wait for vacuum: docs/team.md)
        assert "grace" not in repr(ledger_tables(workspace)).lower()
    else:  # SQLite: not even in the file's free pages (secure_delete)
        assert "grace" not in (workspace / ".newsletter" / "ledger.sqlite3").read_bytes().decode("latin1").lower()
    again = run("subscribers", "remove", "grace@example.org")
    assert again.exit_code == 1 and again.stdout.endswith("outbox: no message files of grace@example.org\n")


def test_remove_says_the_suppression_is_kept_and_how_to_delete_it(run, workspace):
    """Erasure is not consent to mail again: the block stays, and the user is told it holds the address."""
    assert run("suppressions", "add", "grace@example.org", "--reason", "bounced").exit_code == 0
    result = run("subscribers", "remove", "grace@example.org")
    assert result.exit_code == 0, result.output
    assert ("ledger: its suppression (bounced, source manual) is kept, with the address, so it is never mailed again; "
            "`newsletter suppressions remove grace@example.org` deletes it too") in result.stdout
    assert "grace@example.org" in run("suppressions", "list").stdout


def test_remove_of_an_address_found_nowhere_creates_no_ledger(run, workspace):
    result = run("subscribers", "remove", "nobody@example.org")
    assert result.exit_code == 1
    assert result.stdout == ("nobody@example.org is not in subscribers/subscribers.csv\n"
                             "ledger: no delivery records of nobody@example.org\n")
    assert not (workspace / ".newsletter").exists()
    assert run("subscribers", "remove", "ada@example.com").exit_code == 0  # in the list only: no ledger needed
    assert not (workspace / ".newsletter").exists()


def test_remove_can_delete_an_invalid_row(run):
    LIST.write_text(LIST.read_text() + "not-an-address,Oops,,,,\n")
    assert run("subscribers", "remove", "Not-An-Address").exit_code == 0
    assert run("subscribers", "check").exit_code == 0


def test_list_prints_tab_separated_rows_and_filters(run):
    assert run("subscribers", "list", "--segment", "Founders").stdout == (
        "ada@example.com\tAda Lovelace\tsubscribed\tweekly;founders\n"
        "margaret@example.com\tMargaret Hamilton, MIT\tsubscribed\tweekly;founders\n")
    assert run("subscribers", "list", "--status", "unsubscribed").stdout == (
        "alan@example.com\tAlan Turing\tunsubscribed\tweekly\n")
    assert len(run("subscribers", "list").stdout.splitlines()) == 5


def test_list_json_has_every_column(run):
    people = json.loads(run("subscribers", "list", "--json", "--status", "unsubscribed").stdout)
    assert people == [{"email": "alan@example.com", "name": "Alan Turing", "status": "unsubscribed",
                       "tags": ["weekly"], "subscribed_at": "2026-01-09", "city": "Manchester"}]
    assert json.loads(run("subscribers", "list", "--json", "--segment", "nobody").stdout) == []


def test_count_by_status(run):
    assert run("subscribers", "count").stdout == (
        "subscribed          4\nunsubscribed        1\nbounced             0\ncomplained          0\n"
        "total               5\n")
    assert json.loads(run("subscribers", "count", "--segment", "founders", "--json").stdout) == {
        "subscribed": 2, "unsubscribed": 0, "bounced": 0, "complained": 0, "total": 2}


def test_export_csv_and_json(run):
    assert run("subscribers", "export").stdout == (
        "email,name,status,tags,subscribed_at,city\n"
        "ada@example.com,Ada Lovelace,subscribed,weekly;founders,2026-01-04,London\n"
        "grace@example.org,Grace Hopper,subscribed,weekly,2026-02-11,Arlington\n"
        "linus@example.net,,subscribed,weekly,2026-03-20,\n"
        'margaret@example.com,"Margaret Hamilton, MIT",subscribed,weekly;founders,2026-05-02,Boston\n'
        "alan@example.com,Alan Turing,unsubscribed,weekly,2026-01-09,Manchester\n")
    people = json.loads(run("subscribers", "export", "--format", "json").stdout)
    assert [p["email"] for p in people][:2] == ["ada@example.com", "grace@example.org"]
    assert people[3]["name"] == "Margaret Hamilton, MIT"


def test_check_passes_a_good_list(run):
    result = run("subscribers", "check")
    assert result.exit_code == 0
    assert result.stdout == "subscribers/subscribers.csv: 5 subscriber(s), no problems (4 subscribed, 1 unsubscribed)\n"


def test_check_lists_every_problem_and_changes_nothing(run):
    LIST.write_text(LIST.read_text() + "grace@example.org,Grace again,,,,\nbob@,Bob,maybe,,,\n")
    before = LIST.read_bytes()
    result = run("subscribers", "check")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: subscribers/subscribers.csv: 3 problem(s)\n"
        "subscribers/subscribers.csv:7: duplicate of line 3 (grace@example.org)\n"
        "subscribers/subscribers.csv:8: invalid email address 'bob@': There must be something after the @-sign.\n"
        "subscribers/subscribers.csv:8: unknown status 'maybe' (expected one of: subscribed, unsubscribed, bounced, "
        "complained; blank means subscribed)\n"
        "Fix them, then run `newsletter subscribers check` again.\n")
    assert LIST.read_bytes() == before


@pytest.mark.parametrize("command", [["list"], ["count"], ["export"], ["export", "--format", "json"]])
def test_read_commands_refuse_an_invalid_list(run, command):
    LIST.write_text(LIST.read_text() + "bob@,Bob,,,,\n")
    result = run("subscribers", *command)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        "Error: subscribers/subscribers.csv: 1 problem(s) in the subscriber list\n"
        "subscribers/subscribers.csv:7: invalid email address 'bob@': There must be something after the @-sign.\n"
        "Fix them (`newsletter subscribers check` lists them again), or pass --skip-invalid to skip those rows.\n")


def test_read_commands_skip_invalid_rows_and_name_them_on_stderr(run):
    LIST.write_text(LIST.read_text() + "Grace@example.org,Grace again,,,,\nbob@,Bob,,,,\n")
    skipped = ("skipped subscribers/subscribers.csv:7: duplicate of line 3 (Grace@example.org)\n"
               "skipped subscribers/subscribers.csv:8: invalid email address 'bob@': There must be something after "
               "the @-sign.\n")
    export = run("subscribers", "export", "--skip-invalid")
    assert export.exit_code == 0 and export.stderr == skipped
    assert "Grace again" not in export.stdout  # the first Grace only
    assert [line.split(",")[0] for line in export.stdout.splitlines()[1:]] == [
        "ada@example.com", "grace@example.org", "linus@example.net", "margaret@example.com", "alan@example.com"]
    people = json.loads(run("subscribers", "export", "--format", "json", "--skip-invalid").stdout)
    assert [p["name"] for p in people][1] == "Grace Hopper"
    listed = run("subscribers", "list", "--skip-invalid")
    assert listed.stderr == skipped and len(listed.stdout.splitlines()) == 5
    counted = run("subscribers", "count", "--json", "--skip-invalid")
    assert counted.stderr == skipped and json.loads(counted.stdout)["total"] == 5
    assert run("subscribers", "count").exit_code == 1  # without the flag: refused, as before
