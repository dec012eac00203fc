"""The preview's Report tab (issue 15): `newsletter preview` in a subprocess on 127.0.0.1 serves, for an issue
the ledger knows, the very page `newsletter report ISSUE --html` writes; before the send, no tab and a 404."""

from __future__ import annotations

import pytest
import requests
from test_preview import ISSUE, PreviewProcess

pytestmark = pytest.mark.slow  # starts `newsletter preview` in a subprocess

ISSUE_ID = "2026-11-30-weekly"
SECRET = {"NEWSLETTER_SECRET": "test-secret"}


@pytest.fixture
def preview(workspace):
    process = PreviewProcess(workspace, ISSUE, "--no-open")
    yield process
    process.stop()


def test_the_report_tab_serves_the_report_page_once_the_issue_is_sent(preview, run, workspace):
    assert preview.state()["report"] is False
    before = requests.get(preview.url + "report.html", timeout=10)
    assert before.status_code == 404 and "has not been sent yet" in before.text

    assert run("send", ISSUE_ID, "--yes", env=SECRET).exit_code == 0
    assert preview.state()["report"] is True
    served = requests.get(preview.url + "report.html", timeout=10)
    assert served.status_code == 200 and served.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = served.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy  # no script may run in it
    assert "<script" not in served.text and ISSUE_ID in served.text and "<svg" in served.text

    written = workspace / "report.html"
    assert run("report", ISSUE_ID, "--html", str(written), env=SECRET).exit_code == 0
    assert served.text == written.read_text(encoding="utf-8")  # the same page as --html

    page = requests.get(preview.url, timeout=10).text
    assert 'id="tab-report"' in page and 'id="panel-report"' in page
