"""`newsletter preview`: the server in a subprocess on a free port, driven over real sockets.

`PreviewProcess` is shared with test_preview_browser.py.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from newsletter.preview.live import NO_FIELDS_EMAIL

pytestmark = pytest.mark.slow  # each test starts `newsletter preview` in a subprocess

ISSUE = "issues/2026-11-30-weekly.md"
START_TIMEOUT = 20


class PreviewProcess:
    """``newsletter preview`` running in a subprocess; ``url`` is what it printed."""

    def __init__(self, workspace: Path, *args: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_") and k != "DISPLAY"}
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-c", "from newsletter.cli import main; main()", "preview", *args]
        self.proc = subprocess.Popen(command, cwd=workspace, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines.append), daemon=True).start()
        self.lines: list[str] = []
        self.url = self._wait_for_url()

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.stdout.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    time.sleep(0.2)  # let the stderr pump finish
                    pytest.fail(f"preview exited with {self.proc.returncode}: {''.join(self.stderr_lines)}")
                continue
            self.lines.append(line)
            match = re.search(r" at (http://\S+)", line)
            if match:
                return match.group(1)
        pytest.fail(f"preview printed no URL in {START_TIMEOUT}s: {self.lines} {self.stderr_lines}")

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def state(self, email: str = "") -> dict:
        return requests.get(self.url + "api/state", params={"as": email}, timeout=5).json()

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C, then (exit code, stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        time.sleep(0.1)
        rest = []
        while not self.stdout.empty():
            rest.append(self.stdout.get())
        return code, "".join(self.lines + rest), "".join(self.stderr_lines)


def raw_get(port: int, target: str, host: str | None = None) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (requests would normalise ``/../``)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest("GET", target, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_for(predicate, what: str, timeout: float = 8.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def save(path: Path, text: str) -> None:
    """Save like an editor does: write a new file and rename it over the old one."""
    temporary = path.with_name(path.name + ".saving~")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@pytest.fixture
def preview(workspace):
    process = PreviewProcess(workspace, ISSUE, "--no-open")
    yield process
    process.stop()


# --- the page, the email, the details -------------------------------------------------------

def test_page_has_the_toggles_tabs_and_panels(preview):
    page = requests.get(preview.url, timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.text
    for control in ('id="width-desktop"', 'id="width-mobile"', 'id="dark"', 'aria-pressed', 'id="as"',
                    'role="tablist"', 'id="tab-html"', 'id="tab-text"', 'id="headers"', 'id="lint"',
                    'id="size"', 'id="error"'):
        assert control in html, control
    iframe = re.search(r"<iframe[^>]*>", html).group(0)
    assert 'sandbox="allow-same-origin allow-popups allow-popups-to-escape-sandbox"' in iframe  # no allow-scripts
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http" not in re.sub(r'https?://www\.w3\.org\S*', "", html.split("<body>")[0]), "no CDN"
    for asset in ("/static/preview.css", "/static/preview.js"):
        response = requests.get(preview.url.rstrip("/") + asset, timeout=5)
        assert response.status_code == 200 and len(response.text) > 1000


def test_state_has_headers_size_lint_and_subscribers(preview):
    state = preview.state()
    assert state["error"] is None
    headers = dict(state["headers"])
    assert headers["From"] == "Field Notes Weekly <notes@example.com>"
    assert headers["To"] == "Ada Lovelace <ada@example.com>"
    assert headers["Subject"].startswith("Field Notes #48")
    assert headers["Preheader"].startswith("Four stories")
    assert headers["List-Unsubscribe"].startswith("<https://example.com/notes/unsubscribe?t=")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert state["size"]["clip"] == 102 * 1024 and 10_000 < state["size"]["bytes"] < state["size"]["clip"]
    assert isinstance(state["lint"], list)
    emails = [choice["email"] for choice in state["subscribers"]]
    assert emails[0] == "ada@example.com" and NO_FIELDS_EMAIL in emails
    assert "alan@example.com" not in emails  # unsubscribed readers are not offered
    assert state["text"].startswith("Field Notes #48") and "Hi Ada Lovelace," in state["text"]


def test_email_is_the_compiled_html_sandboxed(preview):
    response = requests.get(preview.url + "email.html", timeout=5)
    assert response.status_code == 200
    assert "Rotterdam Plugs In Its Cruise Terminal" in response.text and "Hi Ada Lovelace," in response.text
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("sandbox ") and "allow-scripts" not in csp and "script-src 'none'" in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert '<base target="_blank">' in response.text
    text = requests.get(preview.url + "email.txt", params={"as": "linus@example.net"}, timeout=5)
    assert text.headers["Content-Type"].startswith("text/plain") and "Hi there," in text.text


def test_subscriber_picker_shows_personalisation_and_fallbacks(preview):
    linus = preview.state("linus@example.net")
    assert dict(linus["headers"])["To"] == "linus@example.net" and "Hi there," in linus["text"]
    nobody = requests.get(preview.url + "email.html", params={"as": NO_FIELDS_EMAIL}, timeout=5).text
    assert "Hi there," in nobody and "Ada" not in nobody


def test_as_option_chooses_the_first_reader(workspace):
    process = PreviewProcess(workspace, ISSUE, "--no-open", "--as", "grace@example.org")
    try:
        state = process.state()
        assert state["as"] == "grace@example.org" and "Hi Grace Hopper," in state["text"]
        assert state["subscribers"][0]["email"] == "grace@example.org"
    finally:
        process.stop()


# --- live reload -----------------------------------------------------------------------------

def next_version(lines) -> str:
    for line in lines:
        if line.startswith("data: "):
            return line[len("data: "):]
    raise AssertionError("event stream ended")


def test_saving_the_issue_pushes_a_new_version_and_errors_show_file_and_line(preview, workspace):
    stream = requests.get(preview.url + "events", stream=True, timeout=10)
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    lines = stream.iter_lines(chunk_size=1, decode_unicode=True)
    first = next_version(lines)
    issue = workspace / ISSUE
    original = issue.read_text(encoding="utf-8")

    save(issue, original.replace("Rotterdam Plugs In", "Hamburg Plugs In"))
    second = next_version(lines)  # pushed by the server: nobody asked
    assert second != first
    assert "Hamburg Plugs In" in requests.get(preview.url + "email.html", timeout=5).text

    save(issue, original.replace("Welcome back", "Welcome {% if %} back"))
    next_version(lines)
    error = preview.state()["error"]
    assert error["path"] == ISSUE and error["line"] == 11 and "Expected an expression" in error["message"]
    assert requests.get(preview.url + "email.html", timeout=5).status_code == 503
    assert requests.get(preview.url, timeout=5).status_code == 200  # still serving

    save(issue, original)
    next_version(lines)
    assert preview.state()["error"] is None
    stream.close()
    code, out, err = preview.stop()
    assert code == 0
    assert f"Error: {ISSUE}:11: template error" in err  # the terminal says it too


def test_template_config_and_list_changes_recompile(preview, workspace):
    template = workspace / "templates" / "digest.mjml"
    template.write_text(template.read_text(encoding="utf-8").replace("View this issue online", "Read it on the web"),
                        encoding="utf-8")  # written in place, not renamed
    wait_for(lambda: "Read it on the web" in requests.get(preview.url + "email.html", timeout=5).text,
             "the template change")

    toml = workspace / "newsletter.toml"
    save(toml, toml.read_text(encoding="utf-8").replace('name = "Field Notes Weekly"', 'name = "Harbour Notes"'))
    wait_for(lambda: "Harbour Notes" in preview.state()["text"], "the config change")

    subscribers = workspace / "subscribers" / "subscribers.csv"
    save(subscribers, subscribers.read_text(encoding="utf-8").replace("Ada Lovelace", "Augusta Ada King"))
    wait_for(lambda: "Hi Augusta Ada King," in preview.state()["text"], "the subscriber list change")

    save(toml, toml.read_text(encoding="utf-8").replace('[newsletter]', '[newsleter]'))
    error = wait_for(lambda: preview.state()["error"], "the config error")
    assert error["path"].endswith("newsletter.toml") and "unknown section [newsleter]" in error["message"]


# --- what it refuses -------------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "/../etc/passwd", "/static/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fnewsletter.toml",
    "/./newsletter.toml", "/static/..\\..\\newsletter.toml", "http://127.0.0.1/../newsletter.toml",
])
def test_path_traversal_is_refused(preview, target):
    status, body = raw_get(preview.port, target)
    assert status == 400 and b"Refused" in body


@pytest.mark.parametrize("target", ["/newsletter.toml", f"/{ISSUE}", "/subscribers/subscribers.csv", "/etc/passwd",
                                    "//etc/passwd", "/static/", "/static/index.html", "/templates/digest.mjml"])
def test_only_what_it_compiled_is_served(preview, target):
    status, body = raw_get(preview.port, target)
    assert status == 404 and b"ada@example.com" not in body and b"[newsletter]" not in body


def test_foreign_host_header_is_refused(preview):
    status, body = raw_get(preview.port, "/api/state", host=f"rebind.attacker.example:{preview.port}")
    assert status == 403 and b"ada@example.com" not in body
    assert raw_get(preview.port, "/api/state", host=f"localhost:{preview.port}")[0] == 200


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: picks the outgoing interface, sends nothing
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback or address == "0.0.0.0" else address


def test_listens_on_loopback_only(preview):
    assert preview.url.startswith("http://127.0.0.1:")
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, preview.port), timeout=3).close()


def test_other_interfaces_only_when_asked_with_a_warning(workspace):
    process = PreviewProcess(workspace, ISSUE, "--no-open", "--host", "0.0.0.0")
    try:
        assert process.url.startswith("http://127.0.0.1:")
        assert requests.get(process.url, timeout=5).status_code == 200
    finally:
        code, _, err = process.stop()
    assert code == 0 and "Warning: --host 0.0.0.0 is not a loopback address" in err


def test_busy_port_is_one_clear_error(preview, workspace):
    result = subprocess.run([sys.executable, "-c", "from newsletter.cli import main; main()", "preview", ISSUE,
                             "--no-open", "--port", str(preview.port)],
                            cwd=workspace, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: 127.0.0.1 port {preview.port} is in use")


def test_ctrl_c_stops_cleanly_with_a_page_connected(preview):
    stream = requests.get(preview.url + "events", stream=True, timeout=10)
    next_version(stream.iter_lines(chunk_size=1, decode_unicode=True))
    code, out, err = preview.stop()
    stream.close()
    assert code == 0 and "Preview stopped." in out and "Traceback" not in err


def test_missing_issue_fails_before_serving(run):
    result = run("preview", "issues/nope.md", "--no-open")
    assert result.exit_code == 1 and "Error: issues/nope.md: no such issue file" in result.stderr
