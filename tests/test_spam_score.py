"""What a spam filter says about the emails we write (issue 12): SpamAssassin's local rules over the
built .eml of every layout x {the example issue, a seed-shaped digest}, and RFC 2045's 76-character
limit on quoted-printable lines, which SpamAssassin scores as MIME_QP_LONG_LINE."""

import email
import email.policy
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = sorted(p.stem for p in (REPO / "templates").glob("*.mjml"))
SEED = Path(__file__).parent / "fixtures" / "issues" / "seed-shaped.md"
EXAMPLE = "2026-11-30-weekly"
RULE_MAX = 0.1  # any rule scoring more is something the layout or the MIME writer can avoid
TOTAL_MAX = 0.5
# "  0.7 HTML_FONT_LOW_CONTRAST BODY: HTML font color ..." in the report's table
RULE_LINE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z][A-Z0-9_]+)\s+(.*)$")


def build_eml(run, workspace, issue: str, layout: str) -> Path:
    if issue == "seed":
        text = SEED.read_text(encoding="utf-8").replace("---\n", f"---\ntemplate: {layout}\n", 1)
        (workspace / "issues" / "seed.md").write_text(text, encoding="utf-8")
        ref = "issues/seed.md"
    else:
        path = workspace / "issues" / f"{EXAMPLE}.md"
        path.write_text(path.read_text(encoding="utf-8").replace("---\n", f"---\ntemplate: {layout}\n", 1),
                        encoding="utf-8")
        ref = f"issues/{EXAMPLE}.md"
    result = run("build", ref, "--out", "out")
    assert result.exit_code == 0, result.output
    [eml] = (workspace / "out").glob("*.eml")
    return eml


def quoted_printable_lines(raw: bytes) -> list[bytes]:
    """The encoded lines of every quoted-printable body part, as written."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    lines = []
    for part in message.walk():
        if part.get("Content-Transfer-Encoding", "").lower() == "quoted-printable":
            lines += part.get_payload(decode=False).encode("ascii").splitlines()
    return lines


@pytest.mark.parametrize("layout", LAYOUTS)
def test_quoted_printable_lines_stay_within_76_characters(run, workspace, layout):
    """A title long enough that its `=` underline alone (each `=` encoded as `=3D`) is ~300 characters."""
    issue = workspace / "issues" / f"{EXAMPLE}.md"
    long_title = "title: \"" + "A long title about ports, rivers and repair cafés " * 2 + "\"\n"
    issue.write_text(issue.read_text(encoding="utf-8").replace("---\n", f"---\n{long_title}", 1), encoding="utf-8")
    raw = build_eml(run, workspace, "example", layout).read_bytes()
    lines = quoted_printable_lines(raw)
    assert len(lines) > 50 and any(b"=3D=3D=3D" in line for line in lines)
    too_long = [line for line in lines if len(line) > 76]
    assert too_long == [], f"{len(too_long)} quoted-printable line(s) over 76 characters: {too_long[0][:90]!r}"
    text = email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",)).get_content()
    title = text.splitlines()[0]
    assert text.splitlines()[1] == "=" * len(title)  # decoded: one unbroken underline as long as the title


def spamassassin_report(eml: Path) -> tuple[float, list[tuple[float, str, str]]]:
    """(total score, [(points, rule, description)]) from `spamassassin -t -L` (local tests only)."""
    result = subprocess.run(["spamassassin", "-t", "-L"], input=eml.read_bytes(), capture_output=True, timeout=120)
    out = result.stdout.decode("utf-8", "replace")
    head = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", out)
    assert head, f"no SpamAssassin report (exit {result.returncode}): {result.stderr.decode()[-500:]}"
    table = out[head.end():].split("\n---- ", 1)[1].split("\n", 1)[1]
    rules = []
    for line in table.splitlines():
        match = RULE_LINE.match(line)
        if match:
            rules.append((float(match.group(1)), match.group(2), match.group(3)))
        elif not line.strip():
            break
    return float(head.group(1)), rules


@pytest.mark.skipif(shutil.which("spamassassin") is None,
                    reason="spamassassin is not installed (Debian: apt-get install spamassassin; .ci/run does)")
@pytest.mark.parametrize("issue", ["example", "seed"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_spamassassin_local_rules_score_every_layout_low(run, workspace, layout, issue):
    eml = build_eml(run, workspace, issue, layout)
    total, rules = spamassassin_report(eml)
    print(f"\n{layout} x {issue}: {total} points")
    for points, rule, description in rules:
        print(f"  {points:5.1f} {rule:24} {description}")
    assert rules, "the report's rule table was not read"
    avoidable = [(rule, points) for points, rule, _ in rules if points > RULE_MAX]
    assert avoidable == [], f"{layout} x {issue}: rules above {RULE_MAX} fired: {avoidable}"
    assert total <= TOTAL_MAX
