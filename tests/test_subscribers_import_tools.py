"""`newsletter subscribers import` of Mailchimp, Buttondown, Substack and listmonk exports (tests/fixtures/imports/),
through the CLI: the mapping --dry-run prints, the list that results, --map and its errors."""

import shutil
from pathlib import Path

import pytest

from newsletter.subscribers.reader import iter_subscribers

FIXTURES = Path(__file__).parent / "fixtures" / "imports"
LIST = Path("subscribers/subscribers.csv")
NOW = "2026-12-01T09:00:00Z"


@pytest.fixture(autouse=True)
def exports(workspace, monkeypatch):
    for path in FIXTURES.glob("*.csv"):
        shutil.copy(path, path.name)
    monkeypatch.setattr("newsletter.subscribers.importer.utc_now", lambda: NOW)


def people() -> dict:
    return {s.email: s for s in iter_subscribers(LIST)}


def refused(run, *args) -> str:
    """Import, expect exit 1 with the list byte-for-byte as it was; the stderr."""
    before = LIST.read_bytes()
    result = run("subscribers", "import", *args)
    assert result.exit_code == 1, result.output
    assert LIST.read_bytes() == before and result.stdout == ""
    return result.stderr


def test_mailchimp_dry_run_prints_every_column_and_writes_nothing(run):
    before = LIST.read_bytes()
    result = run("subscribers", "import", "mailchimp_unsubscribed.csv", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "columns (change one with --map COLUMN=FIELD):\n"
        "  'Email Address' -> email\n"
        "  'First Name' -> first_name; name, with 'Last Name'\n"
        "  'Last Name' -> last_name; name, with 'First Name'\n"
        "  'MEMBER_RATING' -> member_rating (Mailchimp's 1-5 engagement stars: a merge field, not a status)\n"
        "  'OPTIN_TIME' -> subscribed_at\n"
        "  'OPTIN_IP' -> optin_ip\n"
        "  'CONFIRM_TIME' -> confirm_time\n"
        "  'CONFIRM_IP' -> confirm_ip\n"
        "  'LATITUDE' -> latitude\n"
        "  'LONGITUDE' -> longitude\n"
        "  'GMTOFF' -> gmtoff\n"
        "  'DSTOFF' -> dstoff\n"
        "  'TIMEZONE' -> timezone\n"
        "  'CC' -> cc\n"
        "  'REGION' -> region\n"
        "  'UNSUB_TIME' -> unsubscribed_at; status unsubscribed when set (Mailchimp)\n"
        "  'UNSUB_CAMPAIGN_TITLE' -> unsub_campaign_title\n"
        "  'UNSUB_CAMPAIGN_ID' -> unsub_campaign_id\n"
        "  'LEID' -> leid\n"
        "  'EUID' -> euid\n"
        "  'UNSUB_REASON' -> unsub_reason\n"
        "  'UNSUB_REASON_OTHER' -> unsub_reason_other\n"
        "  'NOTES' -> notes\n"
        "  'TAGS' -> tags\n"
        "new columns in subscribers/subscribers.csv: first_name, last_name, member_rating, optin_ip, confirm_time, "
        "confirm_ip, latitude, longitude, gmtoff, dstoff, timezone, cc, region, unsubscribed_at, "
        "unsub_campaign_title, unsub_campaign_id, leid, euid, unsub_reason, unsub_reason_other, notes\n"
        "mailchimp_unsubscribed.csv: 1 added, 1 updated, 0 unchanged (dry run: nothing was written)\n")
    assert LIST.read_bytes() == before


def test_mailchimp_export_files_give_tags_names_and_statuses(run):
    for name in ("mailchimp_subscribed.csv", "mailchimp_unsubscribed.csv", "mailchimp_cleaned.csv"):
        assert run("subscribers", "import", name).exit_code == 0
    got = people()
    # "weekly, vip" (a comma in a quoted cell) and "weekly","news" (each tag quoted) are two tags each
    assert got["ada@example.com"].tags == ("weekly", "founders", "vip")
    assert got["robin@example.org"].tags == ("weekly", "news")
    # First Name + Last Name fill a blank name, and never replace one the list has
    assert got["robin@example.org"].name == "Robin Quill"
    assert got["ada@example.com"].name == "Ada Lovelace"
    assert got["robin@example.org"].fields["first_name"] == "Robin"  # still a merge field
    # UNSUB_TIME: unsubscribed since then (an existing subscriber too); CLEAN_TIME: bounced
    assert (got["grace@example.org"].status, got["grace@example.org"].fields["unsubscribed_at"]) == (
        "unsubscribed", "2026-09-30 17:45:00")
    assert (got["sam@example.net"].status, got["sam@example.net"].fields["subscribed_at"]) == (
        "unsubscribed", "2026-03-01 08:00:00")
    assert got["gone@example.net"].status == "bounced"
    assert got["robin@example.org"].status == "subscribed"
    assert got["robin@example.org"].fields["member_rating"] == "2"


def test_buttondown_subscriber_types_become_statuses(run):
    result = run("subscribers", "import", "buttondown.csv", "--dry-run")
    assert result.stdout.splitlines()[4] == (
        "  'subscriber_type' -> status (regular, premium, … = subscribed; unsubscribed, unactivated = unsubscribed; "
        "undeliverable = bounced; complained = complained) (Buttondown)")
    assert result.stdout.splitlines()[14] == (
        "  'unsubscription_date' -> unsubscribed_at; status unsubscribed when set (Buttondown)")
    assert run("subscribers", "import", "buttondown.csv").exit_code == 0
    got = people()
    assert {e: got[e].status for e in ("ada@example.com", "lee@example.org", "max@example.net", "pat@example.net",
                                       "kim@example.org")} == {
        "ada@example.com": "subscribed", "lee@example.org": "subscribed", "max@example.net": "unsubscribed",
        "pat@example.net": "bounced", "kim@example.org": "unsubscribed"}  # kim never confirmed: not sent to
    assert got["max@example.net"].fields["unsubscribed_at"] == "2026-10-11T09:00:00Z"
    assert got["lee@example.org"].fields["subscribed_at"] == "2026-05-09T14:20:00Z"
    assert got["lee@example.org"].fields["metadata"] == '{"city": "Lyon"}'
    assert got["ada@example.com"].tags == ("weekly", "founders", "vip")


def test_substack_email_disabled_unsubscribes_and_a_paid_flag_is_not_a_status(run):
    result = run("subscribers", "import", "substack.csv", "--dry-run")
    assert result.stdout == (
        "columns (change one with --map COLUMN=FIELD):\n"
        "  'email' -> email\n"
        "  'active_subscription' -> active_subscription (Substack's paid-subscription flag, false for free "
        "readers: a merge field, not a status)\n"
        "  'expiry' -> expiry\n"
        "  'plan' -> plan\n"
        "  'email_disabled' -> status (true/1 = unsubscribed; false/0 = no say) (Substack)\n"
        "  'created_at' -> subscribed_at\n"
        "  'first_payment_at' -> first_payment_at\n"
        "new columns in subscribers/subscribers.csv: active_subscription, expiry, plan, first_payment_at\n"
        "substack.csv: 2 added, 1 updated, 0 unchanged (dry run: nothing was written)\n")
    assert run("subscribers", "import", "substack.csv").exit_code == 0
    got = people()
    assert got["jo@example.org"].status == "subscribed"  # a free reader (active_subscription false) stays
    assert got["ren@example.net"].status == "unsubscribed"
    assert got["ada@example.com"].fields["plan"] == "yearly"


def test_listmonk_statuses_and_names(run):
    result = run("subscribers", "import", "listmonk.csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "mapped columns: 'created_at' -> subscribed_at\n"
        "new columns in subscribers/subscribers.csv: uuid, attributes, updated_at\n"
        "listmonk.csv: 2 added, 1 updated, 0 unchanged\n")
    got = people()
    assert (got["noor@example.org"].name, got["noor@example.org"].status) == ("Noor Haddad", "subscribed")
    assert got["vic@example.net"].status == "unsubscribed"  # blocklisted
    assert got["ada@example.com"].fields["uuid"] == "5e1c0b5e-2222-4d3b-8f7a-000000000001"


def test_map_overrides_a_column_and_leaves_one_out(run):
    Path("other.csv").write_text("Subscriber,State,Who,Secret\nnew@example.org,blocklisted,Nia Park,x\n")
    result = run("subscribers", "import", "other.csv", "--map", "subscriber=email", "--map", "State=status",
                 "--map", "Who=name", "--map", "Secret=-", "--dry-run")
    assert result.stdout == (
        "columns (change one with --map COLUMN=FIELD):\n"
        "  'Subscriber' -> email (--map)\n"
        "  'State' -> status (subscribed/enabled = subscribed; unsubscribed/disabled/blocklisted = unsubscribed; "
        "bounced = bounced; complained = complained) (--map)\n"
        "  'Who' -> name (--map)\n"
        "  'Secret' -> left out (--map)\n"
        "other.csv: 1 added, 0 updated, 0 unchanged (dry run: nothing was written)\n")
    assert run("subscribers", "import", "other.csv", "--map", "subscriber=email", "--map", "State=status",
               "--map", "Who=name", "--map", "Secret=-").exit_code == 0
    new = people()["new@example.org"]
    assert (new.name, new.status, "secret" in new.fields) == ("Nia Park", "unsubscribed", False)


def test_without_an_email_column_the_error_points_at_map(run):
    Path("other.csv").write_text("Subscriber\nnew@example.org\n")
    assert refused(run, "other.csv") == (
        "Error: other.csv: the header row cannot be used\n"
        "other.csv:1: no email column in the header row (columns: Subscriber); name the column of addresses "
        "'email'\n"
        "Fix the header row (the first line) of the file, or say which column is which with --map COLUMN=FIELD.\n")


@pytest.mark.parametrize("option, error", [
    ("Email Address", "Error: --map 'Email Address': expected COLUMN=FIELD (e.g. --map 'E-mail Address=email', "
                      "or --map 'Notes=-' to leave a column out)"),
    ("Emial=email", "Error: --map 'Emial=email': substack.csv: no column 'Emial' in the header row (its columns "
                    "are: 'email', 'active_subscription', 'expiry', 'plan', 'email_disabled', 'created_at', "
                    "'first_payment_at')"),
    ("plan=Plan Name", "Error: --map 'plan=Plan Name': 'Plan Name' is not a field name (use one of email, name, "
                       "status, tags, subscribed_at, unsubscribed_at, a merge field name (letters, digits and _, "
                       "e.g. first_name), or - to leave the column out)"),
    ("plan=email", "Error: --map: columns 'email' and 'plan' would both be email (map one of them elsewhere "
                   "(--map 'plan=-' leaves it out))"),
])
def test_a_bad_map_says_what_where_and_what_to_do(run, option, error):
    assert refused(run, "substack.csv", "--map", option) == error + "\n"


def test_a_column_mapped_twice_is_refused(run):
    assert refused(run, "substack.csv", "--map", "plan=tier", "--map", "PLAN=-") == (
        "Error: --map 'PLAN=-': column 'plan' is mapped twice (give each column one --map)\n")


def test_an_unknown_status_value_names_the_row_and_the_way_out(run):
    Path("bd.csv").write_text("email,subscriber_type\nnew@example.org,mystery\n")
    assert refused(run, "bd.csv") == (
        "Error: bd.csv: 1 problem(s); nothing was imported\n"
        "bd.csv:2: unknown subscriber_type 'mystery' (known: regular, premium, trialed, unpaid, gifted, churning, "
        "paused, past_due, unsubscribed, unactivated, removed, blocked, churned, undeliverable, spammy, malformed, "
        "disposable, complained); pass --status S to give every row one status, or --map 'subscriber_type=-' to "
        "leave the column out\n"
        "Fix them, or pass --skip-invalid to import only the valid rows.\n")
    result = run("subscribers", "import", "bd.csv", "--status", "subscribed")
    assert result.exit_code == 0, result.output
    assert people()["new@example.org"].status == "subscribed"


def test_buttondowns_current_export_reads_type_as_the_status(run):
    # Its `type` column (once subscriber_type) read as a merge field made every reader "subscribed": those
    # who left, never confirmed or bounce were sent the next issue.
    result = run("subscribers", "import", "buttondown-2025.csv", "--dry-run")
    assert "  'type' -> status (regular, premium, … = subscribed;" in result.stdout
    assert "  'undeliverability_date' -> status bounced when set (Buttondown)" in result.stdout
    assert run("subscribers", "import", "buttondown-2025.csv").exit_code == 0
    got = people()
    assert {e: got[e].status for e in ("reader.one@example.com", "left.early@example.org",
                                       "never.confirmed@example.net", "hard.bounce@example.org")} == {
        "reader.one@example.com": "subscribed", "left.early@example.org": "unsubscribed",
        "never.confirmed@example.net": "unsubscribed", "hard.bounce@example.org": "bounced"}


def test_a_type_column_of_another_file_stays_a_merge_field(run, workspace):
    Path("other.csv").write_text("email,type\nnew@example.org,customer\n")
    assert run("subscribers", "import", "other.csv").exit_code == 0
    assert people()["new@example.org"].fields["type"] == "customer"
