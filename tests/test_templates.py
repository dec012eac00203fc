"""The bundled layouts: valid MJML by the official validator, and shipped inside the wheel."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from newsletter import config
from newsletter.compile.issue import load_issue
from newsletter.compile.render import render_mjml

REPO = Path(__file__).resolve().parent.parent
MJML_CLI = REPO / "node_modules" / ".bin" / "mjml"
LAYOUTS = sorted((REPO / "templates").glob("*.mjml"))


@pytest.mark.skipif(not MJML_CLI.exists(), reason="npm mjml not installed (run `npm ci`)")
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda p: p.name)
def test_bundled_layout_passes_official_mjml_validator(layout, workspace, tmp_path):
    """mjml-python validates nothing, so the npm validator checks the Jinja-rendered layout."""
    settings = config.load(workspace / "newsletter.toml", {})
    issue_path = workspace / "issues" / "v.md"
    issue_path.write_text(f"---\nsubject: Validate\npreheader: P\ntemplate: {layout.stem}\ndate: 2026-11-30\n"
                          "cta:\n  text: Go\n  url: https://example.com\n---\n![Hero](https://example.com/h.png)\n\nIntro\n\n"
                          "## 1. A\n\n[![Thumb](https://example.com/t.png)](https://example.com/a)\n\nB\n\n"
                          "## 2. B\n\n![Thumb](https://example.com/u.png)\n\nB\n\n### Sub\n\nE\n\n## C {-}\n\nD\n")
    rendered = tmp_path / f"{layout.stem}.mjml"
    rendered.write_text(render_mjml(load_issue(issue_path), settings).mjml, encoding="utf-8")
    result = subprocess.run([str(MJML_CLI), "--validate", str(rendered), "--config.validationLevel=strict"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not MJML_CLI.exists(), reason="npm mjml not installed (run `npm ci`)")
def test_validator_catches_an_illegal_attribute(tmp_path):
    """Guards the test above: the validator really fails on a bad layout."""
    bad = tmp_path / "bad.mjml"
    bad.write_text('<mjml><mj-body><mj-section><mj-column><mj-text colr="red">x</mj-text>'
                   "</mj-column></mj-section></mj-body></mjml>")
    result = subprocess.run([str(MJML_CLI), "--validate", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Attribute colr is illegal" in result.stdout + result.stderr


@pytest.mark.slow
def test_wheel_bundles_the_example_workspace(tmp_path):
    """`init` works after `pip install`: the wheel carries templates, example issue, list and config."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, timeout=300,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    wheel = next(tmp_path.glob("newsletter-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for layout in LAYOUTS:
        assert f"newsletter/_workspace/templates/{layout.name}" in names
    for relative in ("newsletter.toml", "subscribers/subscribers.csv", "issues/2026-11-30-weekly.md"):
        assert f"newsletter/_workspace/{relative}" in names

    # Install that wheel's package into a bare folder and run `init` from it, away from the checkout.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run([sys.executable, "-c", "from newsletter.cli import main; main()", "init", "digest"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (work / "digest" / "templates" / "digest.mjml").read_text() == (REPO / "templates" / "digest.mjml").read_text()
