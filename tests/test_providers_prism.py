"""Contract tests with Prism: every request our adapters build is accepted by the provider's published spec.

Prism (npm ``@stoplight/prism-cli``) serves each spec from tests/fixtures/specs/ (copies of the providers' published specs)
on 127.0.0.1 with ``--errors``, so a request that breaks the spec is answered
with an error (and an ``sl-violations`` header) instead of a mocked success.
Mailgun publishes no spec, nor does Amazon SES (its service model is checked in
tests/test_providers_ses.py); the Postmark file is an old Swagger 2.0 copy that
predates ``MessageStream`` and ``Metadata`` (Prism ignores extra fields there).
Brevo's file lists no ``headers`` in a message version, which its batch-sending
guide documents; Prism lets the extra member through, as Brevo does.
Prism is found at $PRISM, node_modules/.bin/prism (`npm ci` installs it from package.json) or on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from fakeproviders import sample_batch
from helpers import make_adapter

from newsletter import config
from newsletter.errors import ProviderError
from newsletter.providers import provider_class

REPO = Path(__file__).resolve().parent.parent
# The providers' published specs, copied from the providers' own publications (SOURCE.txt says where from),
# so a clean checkout on a fresh machine can run these tests.
SPECS = Path(__file__).resolve().parent / "fixtures" / "specs"
SPEC_FILES = {"postmark": "postmark/postmark-server-swagger2.yml", "sendgrid": "sendgrid/tsg_mail_v3.yaml",
              "resend": "resend/resend.yaml", "brevo": "brevo/swagger_definition_v3.yml"}


def find_prism() -> str | None:
    for candidate in (os.environ.get("PRISM"), REPO / "node_modules" / ".bin" / "prism",
                      shutil.which("prism")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


PRISM = find_prism()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PRISM is None, reason="Prism is not installed (`npm ci` installs it from package.json)"),
              pytest.mark.skipif(not SPECS.is_dir(), reason=f"provider specs not found at {SPECS}")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=sorted(SPEC_FILES))
def prism(request):
    name = request.param
    port = free_port()
    process = subprocess.Popen([PRISM, "mock", "--errors", "-h", "127.0.0.1", "-p", str(port),
                                str(SPECS / SPEC_FILES[name])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prism exited: {process.stdout.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("prism did not start within 60 s")
    yield name, f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def looking_up(prism):
    """``(adapter, session, answers)``: the adapter for the Prism server, and a session that appends
    every response it gets to ``answers``."""
    name, url = prism
    answers = []
    with requests.Session() as session:
        session.hooks["response"].append(lambda response, *args, **kwargs: answers.append(response))
        yield make_adapter(name, "prism-test-key", api_base=url), session, answers


def assert_spec_accepted(answers, statuses=(200,)) -> None:
    """Prism found no violation in any request (no ``sl-violations`` header) and answered each with one of ``statuses``."""
    for answer in answers:
        assert "sl-violations" not in answer.headers, answer.headers.get("sl-violations")
        assert answer.status_code in statuses, answer.text[:2000]


VARIANTS = {
    "plain": {},
    "tracking and test mode": {"track_opens": True, "track_clicks": True, "test_mode": True},
    "own stream with List-Unsubscribe": {"message_stream": "newsletters"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_spec_accepts_our_batch_request(prism, variant):
    name, url = prism
    switches = dict(VARIANTS[variant])
    if name == "resend":  # Resend refuses these switches before any request (no per-message equivalent)
        switches = {k: v for k, v in switches.items() if k not in ("track_opens", "track_clicks", "test_mode")}
    if name == "brevo":  # Brevo's tracking is its account's; its test mode is a header
        switches = {k: v for k, v in switches.items() if k not in ("track_opens", "track_clicks")}
    provider = make_adapter(name, "prism-test-key", api_base=url, **switches)
    request = provider.build_request(sample_batch(3))
    response = requests.request(request.method, request.url, headers=dict(request.headers), json=request.json,
                                data=request.data, files=request.files, timeout=30)
    assert_spec_accepted([response], statuses=range(100, 400))


@pytest.mark.parametrize("prism", ["sendgrid"], indirect=True)
def test_the_spec_accepts_a_request_with_an_unsubscribe_group(prism):
    """``[unsubscribe] url = "provider"``: ``asm`` with the group, its tag in the body (the spec's own example shape)."""
    name, url = prism
    flags = {"provider.name": name, "provider.api_base": url, "provider.asm_group_id": 4242,
             "unsubscribe.url": "provider"}
    provider = provider_class(name)(config.resolve({}, {}, flags, source=None), "prism-test-key")
    request = provider.build_request(sample_batch(3, unsubscribe=provider.unsubscribe_placeholder))
    assert json.loads(request.data)["asm"] == {"group_id": 4242, "groups_to_display": [4242]}
    response = requests.post(request.url, headers=dict(request.headers), data=request.data, timeout=30)
    assert_spec_accepted([response], statuses=range(100, 400))


@pytest.mark.parametrize("prism", ["resend"], indirect=True)
def test_the_spec_accepts_our_suppression_list_reads(prism):
    """Only Resend's spec describes its suppression list (Postmark's copy predates it; SendGrid's is mail only)."""
    with looking_up(prism) as (provider, session, answers):
        # Prism answers every page with the spec's example (has_more, the same id): the cursor guard stops it.
        with pytest.raises(ProviderError, match="did not move past its cursor"):
            list(provider.suppression_list(session))
    assert len(answers) == 2 and "after=" in answers[1].url
    assert_spec_accepted(answers)


@pytest.mark.parametrize("prism", ["brevo"], indirect=True)
def test_the_spec_accepts_our_brevo_look_ups(prism):
    """The blocked contacts (suppressions sync) and the transactional events (reconcile)."""
    with looking_up(prism) as (provider, session, answers):
        blocked = list(provider.suppression_list(session))
        outcomes = provider.reconcile(sample_batch(1), session, age=600)
    assert [s.email for s in blocked] == ["abc@xyz.com"] and len(outcomes) == 1  # the spec's examples
    assert len(answers) == 2
    assert_spec_accepted(answers)
