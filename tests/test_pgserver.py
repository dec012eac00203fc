"""The PostgreSQL fixture's skip: a skip with the reason where no server can be started, a failure in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


@pytest.mark.parametrize("required, outcome", [("", "1 skipped"), ("1", "1 failed")])
def test_no_server_skips_with_the_reason_or_fails_where_required(tmp_path, required, outcome):
    (tmp_path / "test_needs_pg.py").write_text(
        "import pgserver\n\ndef test_it():\n    pgserver.unavailable('no initdb here')\n")
    env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_REQUIRE_POSTGRES"}
    env.update(NEWSLETTER_REQUIRE_POSTGRES=required, PYTHONPATH=str(TESTS))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in done.stdout, done.stdout
    expected = "NEWSLETTER_REQUIRE_POSTGRES=1 but no PostgreSQL server: no initdb here" if required else "no initdb here"
    assert expected in done.stdout
