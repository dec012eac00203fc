"""The send loop's CPU per recipient, part by part, for one provider: what is left to cut.

    python benchmarks/sendparts.py                       # SendGrid, 20,000 recipients
    python benchmarks/sendparts.py --provider mailgun -n 5000

``benchmarks/dispatch.py`` times the whole send loop against a fake at real latency;
this runs each step the loop takes for a recipient alone, on one thread, without HTTP,
with the tool's own code and the provider's maximum batch: stream and check the list,
look each chunk up in the ledger, personalise (slot values, the unsubscribe token,
subject, headers, weight), cut batches, refuse line breaks, build the request, encode it
as requests would (nothing to do for a body the adapter already encoded), read the
answer into outcomes, and claim and record each batch by row id (SQLite,
``synchronous=FULL``). CPU time (user + system), the best of three passes, so the
machine's other load inflates it least. The Python steps hold the GIL; the ledger's
are mostly SQLite's C code, which runs beside them (on a second core, if free).

Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from dispatch import ISSUE, make_provider, make_workspace, settings_for  # noqa: E402

PASSES = 3


def best(fn, count: int) -> tuple[float, object]:
    """CPU microseconds per recipient of ``fn()``, the best of PASSES, and its last result."""
    times, result = [], None
    for _ in range(PASSES):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return min(times) / count * 1e6, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="sendgrid")
    parser.add_argument("-n", "--recipients", type=int, default=20_000)
    args = parser.parse_args()
    count, kind = args.recipients, args.provider

    import requests

    from newsletter.compile.pipeline import build_issue
    from newsletter.ledger import open_ledger
    from newsletter.providers.base import Batch, all_outcomes, refuse_line_breaks
    from newsletter.sending.outcomes import complete_outcomes
    from newsletter.sending.plan import SendOptions, SendRun
    from newsletter.subscribers.reader import iter_subscribers

    with tempfile.TemporaryDirectory(prefix="newsletter-parts-") as tmp:
        root = make_workspace(Path(tmp), count)
        settings = settings_for(root, kind, "http://127.0.0.1:9")
        build = build_issue(settings, ISSUE)
        provider = make_provider(settings, kind)
        size = provider.batch_size
        with open_ledger(settings) as ledger:
            run = SendRun(settings, build, provider, ledger, SendOptions(), secret=b"bench-secret")
            ledger.acquire_lease(ISSUE, "parts", stale_after=600)
            run.freeze_plan()
            person, template = run.personalizer, run.compiled.send_template()
            weigh = "bodies" if provider.fills_bodies else "values" if provider.substitutes else ""
            parts: list[tuple[str, float]] = []

            def part(label: str, fn):
                us, result = best(fn, count)
                parts.append((label, us))
                return result

            people = part("stream and check the list", lambda: list(iter_subscribers(build.list_path)))
            emails = [s.email for s in people]
            found = part("look the chunks up in the ledger (SQLite)", lambda: {
                k: v for n in range(0, count, 1000) for k, v in ledger.lookup_rows(ISSUE, emails[n:n + 1000]).items()})
            pairs = part("personalise (values, token, subject, headers)", lambda: [
                person.message_with_values(s, bodies=provider.needs_bodies, weigh=weigh) for s in people])
            messages = [m for m, _ in pairs]
            values = {id(m): v for m, v in pairs}
            groups = part("cut into batches (weigh each)", lambda: list(provider.cut_batches(iter(messages))))
            batches = [Batch(ISSUE, f"b{n}", tuple(g), tuple(values[id(m)] for m in g), template)
                       for n, g in enumerate(groups)]
            part("refuse line breaks", lambda: [refuse_line_breaks(b) for b in batches])
            built = part("build the request", lambda: [provider.build_request(b) for b in batches])
            part("encode it (requests' prepare)", lambda: [requests.Request(
                r.method, r.url, headers=dict(r.headers), json=r.json, data=r.data, files=r.files).prepare()
                for r in built])
            part("outcomes from the answer", lambda: [
                complete_outcomes(b, all_outcomes(b, "sent", provider_id="one-id"), kind) for b in batches])
            rows = [[found[m.to.lower()].id for m in b.messages] for b in batches]
            outcomes = [all_outcomes(b, "sent", provider_id="one-id") for b in batches]
            start = time.process_time()  # once: a claim changes the rows
            for b, r in zip(batches, rows):
                ledger.claim_rows(ISSUE, b.batch_id, r, "parts")
            parts.append(("claim each batch by row id (SQLite, one pass)", (time.process_time() - start) / count * 1e6))
            start = time.process_time()
            for b, r, o in zip(batches, rows, outcomes):
                ledger.record(ISSUE, b.batch_id, o, source=kind, rows=r)
            parts.append(("record each batch by row id (SQLite, one pass)", (time.process_time() - start) / count * 1e6))
            assert ledger.counts(ISSUE)["sent"] == count
    ledger_parts = [us for label, us in parts if "SQLite" in label]
    python = sum(us for _, us in parts) - sum(ledger_parts)
    print(f"{kind}, {count:,} recipients, batches of {size}: CPU microseconds per recipient, best of {PASSES} (the claim and the record: one pass)")
    for label, us in parts:
        print(f"  {label:<58} {us:6.2f}")
    print(f"\nPython (holds the GIL) {python:.1f} us, ledger {sum(ledger_parts):.1f} us: one core runs at most "
          f"{1e6 / python:,.0f} recipients/s of this loop, {1e6 / (python + sum(ledger_parts)):,.0f}/s if the "
          f"ledger shares it")


if __name__ == "__main__":
    main()
