"""Compile the example issue N times; print ms per build for each stage.

    python benchmarks/compile.py [-n 50]

Stages: Markdown, Jinja (layout), MJML (mjml-python), each CSS inliner, plain text,
the build as the issue defines it (MJML + inline + text), the whole
compile_issue() (Markdown and Jinja too) and personalising one recipient. When node and the npm `mjml` package are present (`npm ci`), the
official MJML compile of the same rendered layout runs in the same process of
node, N times, and the ratio official / full build is printed. Target: >= 10x.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter import config  # noqa: E402
from newsletter.compile.inline import inline_css  # noqa: E402
from newsletter.compile.issue import load_issue  # noqa: E402
from newsletter.compile.markdown import render_body  # noqa: E402
from newsletter.compile.pipeline import personalizer  # noqa: E402
from newsletter.compile.render import compile_issue, mjml_to_html, render_mjml, text_part  # noqa: E402
from newsletter.models import Subscriber  # noqa: E402

NODE_BENCH = """
const mjml2html = require(process.argv[2]);
const src = require('fs').readFileSync(process.argv[3], 'utf8');
const n = parseInt(process.argv[4], 10);
(async () => {
  await mjml2html(src);  // warm up
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) { await mjml2html(src, {validationLevel: 'skip'}); }
  console.log(JSON.stringify({ms: Number(process.hrtime.bigint() - t) / 1e6 / n}));
})();
"""


def per_call_ms(fn, n: int) -> float:
    fn()  # warm up caches (Jinja, css-inline)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def official_mjml_ms(mjml_source: str, n: int) -> float | None:
    module = REPO / "node_modules" / "mjml"
    if not shutil.which("node") or not module.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "layout.mjml"
        src.write_text(mjml_source, encoding="utf-8")
        script = Path(tmp) / "bench.js"
        script.write_text(NODE_BENCH)
        out = subprocess.run(["node", str(script), str(module), str(src), str(n)],
                             capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])["ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="builds per stage (median reported)")
    parser.add_argument("--issue", default=str(REPO / "issues" / "2026-11-30-weekly.md"))
    args = parser.parse_args()

    settings = config.load(REPO / "newsletter.toml", {})
    issue = load_issue(args.issue)
    source = render_mjml(issue, settings)
    html = mjml_to_html(source.mjml, source.layout)
    compiled = compile_issue(issue, settings)
    p = personalizer(settings, compiled)
    reader = Subscriber("ada@example.com", name="Ada", fields={"city": "London"})

    rows = [
        ("markdown", per_call_ms(lambda: render_body(issue.body), args.n)),
        ("markdown + jinja (layout)", per_call_ms(lambda: render_mjml(issue, settings), args.n)),
        ("mjml (mjml-python)", per_call_ms(lambda: mjml_to_html(source.mjml, source.layout), args.n)),
        ("inline: css-inline", per_call_ms(lambda: inline_css(html, "css-inline"), args.n)),
        ("inline: premailer", per_call_ms(lambda: inline_css(html, "premailer"), max(5, args.n // 5))),
        ("plain text", per_call_ms(lambda: text_part(source, settings), args.n)),
        ("build: mjml+inline+text", per_call_ms(lambda: text_part(source, settings) and inline_css(
            mjml_to_html(source.mjml, source.layout), "css-inline"), args.n)),
        ("whole compile_issue()", per_call_ms(lambda: compile_issue(issue, settings), args.n)),
        ("personalise 1 recipient", per_call_ms(lambda: p.message(reader), args.n * 20)),
    ]
    print(f"newsletter compile benchmark: {Path(args.issue).name}, median of {args.n} runs, HTML {len(html) / 1024:.1f} KB")
    for name, ms in rows:
        print(f"  {name:<28} {ms:9.3f} ms")
    full = dict(rows)["build: mjml+inline+text"]
    official = official_mjml_ms(source.mjml, args.n)
    if official is None:
        print("  official MJML (node)         skipped: run `npm ci` to install node_modules/mjml")
        return
    print(f"  {'official MJML (node, compile only)':<28} {official:9.3f} ms")
    print(f"  ratio official MJML / build (mjml+inline+text, css-inline): {official / full:.1f}x (target >= 10x)")
    print(f"  ratio official MJML / whole compile_issue() incl. Markdown and Jinja: "
          f"{official / dict(rows)['whole compile_issue()']:.1f}x")


if __name__ == "__main__":
    main()
