"""Personalise the compiled example issue for many recipients on one core: recipients/s.

    python benchmarks/personalize.py            # 200,000 recipients, best of 3
    python benchmarks/personalize.py --quick    # 20,000 recipients

The issue is compiled once; each recipient then costs what ``send`` pays per
message: the slot values (merge fields, the signed unsubscribe URL), the subject,
HTML and text filled in, the List-Unsubscribe headers. Subscribers are built in
memory first, so reading the CSV is not counted (``benchmarks/subscribers.py``
measures that). The parts are timed on their own too, to show where the time goes.
CPU time of this process (one core); numbers only, nothing is asserted.

Target (issue 4): >= 100,000 recipients/s.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter import config  # noqa: E402
from newsletter.compile.pipeline import build_issue, personalizer  # noqa: E402
from newsletter.models import Subscriber  # noqa: E402
from newsletter.unsubscribe import list_unsubscribe_headers, unsubscribe_url  # noqa: E402

ISSUE = "2026-11-30-weekly"
TARGET = 100_000


def readers(count: int) -> list[Subscriber]:
    """Subscribers like the example list's: most named, some not (their greeting falls back)."""
    out = []
    for n in range(count):
        email = f"reader{n:07d}@example.com"
        name = f"Reader {n}" if n % 5 else ""
        fields = {"email": email, "name": name, "status": "subscribed", "tags": "weekly",
                  "subscribed_at": "2026-01-04", "city": "Bristol" if n % 3 else ""}
        out.append(Subscriber(email, name, "subscribed", ("weekly",), fields, n + 2))
    return out


def best_rate(fn, items: list, repeat: int) -> float:
    """Items per CPU second, best of ``repeat`` passes over ``items``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for item in items:
            fn(item)
        best = min(best, time.process_time() - start)
    return len(items) / best if best > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--recipients", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20,000 recipients")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best is reported")
    args = parser.parse_args()
    count = 20_000 if args.quick else args.recipients

    settings = config.load(REPO / "newsletter.toml", {})
    compiled = build_issue(settings, ISSUE).compiled
    person = personalizer(settings, compiled, secret=b"bench-secret")
    people = readers(count)
    values = [person.values(s)[0] for s in people[:min(count, 20_000)]]
    # The send loop streams the list; this benchmark holds it, a million objects that every full
    # collection of the garbage collector would scan again, landing at random in the timed passes.
    gc.collect()
    gc.freeze()
    url_template, mailto = settings.unsubscribe.url, settings.unsubscribe.mailto
    sample = person.message(people[1])

    rows = [
        ("message_with_values() (send)", best_rate(person.message_with_values, people, args.repeat)),
        ("  values(): merge + unsubscribe", best_rate(person.values, people, args.repeat)),
        ("    unsubscribe URL (AES-GCM token)", best_rate(lambda s: unsubscribe_url(url_template, s.email, b"k", ISSUE), people,
                                               args.repeat)),
        ("  fill html (escaped)", best_rate(lambda v: compiled.html.fill(v, html=True), values, args.repeat)),
        ("  fill text", best_rate(lambda v: compiled.text.fill(v, html=False), values, args.repeat)),
        ("  fill subject", best_rate(lambda v: compiled.subject.fill(v, html=False), values, args.repeat)),
        ("  List-Unsubscribe headers", best_rate(lambda s: list_unsubscribe_headers(s, mailto),
                                                 ["https://example.com/u?t=x"] * len(values), args.repeat)),
    ]
    print(f"personalise {ISSUE}: {count:,} recipients, {len(compiled.slots)} slot(s), "
          f"HTML {len(sample.html) / 1024:.1f} KB, text {len(sample.text) / 1024:.1f} KB; "
          f"CPU time, best of {args.repeat}")
    for name, rate in rows:
        print(f"  {name:<34} {rate:>12,.0f} /s  {1e6 / rate:7.2f} us")
    rate = rows[0][1]
    print(f"\n{rate:,.0f} recipients/s on one core: {'meets' if rate >= TARGET else 'MISSES'} "
          f"the {TARGET:,}/s target ({rate / TARGET:.2f}x)")


if __name__ == "__main__":
    main()
