"""Peak RSS of one worker sending a whole list, on the SQLite and the PostgreSQL ledger.

    python benchmarks/memory.py                          # 10k, 100k and 1M readers on both ledgers (slow: minutes)
    python benchmarks/memory.py --sizes 10000,100000     # quicker
    python benchmarks/memory.py --ledgers postgresql --sizes 1000000

Each row is one process doing what ``newsletter send ISSUE --yes`` does after the compile
(``run_tool`` of ``benchmarks/dispatch.py``: check the list, summary, freeze the plan, the send
loop) with the noop provider (bodies filled as Postmark's are, no HTTP), on a fresh workspace
and a fresh ledger: a SQLite file, or a new database in a throwaway PostgreSQL cluster started
as the tests start theirs (``tests/pgserver.py``). It prints the process's peak RSS after each
step, so a growth shows which step makes it. Target (issue 13): at most 100 MB, and flat from
10,000 readers (within 10 MB). Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STEPS = ("build", "list pass", "open", "check", "summary", "plan", "send")


def child(count: int, ledger_url: str) -> None:
    sys.path.insert(0, str(HERE))
    from dispatch import make_workspace, peak_rss_mb, run_tool

    with tempfile.TemporaryDirectory(prefix="newsletter-memory-") as tmp:
        root = make_workspace(Path(tmp), count)
        result = run_tool(root, "noop", "http://127.0.0.1:9", ledger_url=ledger_url)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def measure(count: int, ledger_url: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(count), ledger_url], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{count} readers failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="list sizes [10000,100000,1000000]")
    parser.add_argument("--ledgers", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(int(args.child[0]), args.child[1])
    sizes = [int(n) for n in args.sizes.split(",")]
    ledgers = args.ledgers.split(",")
    cluster = None
    if "postgresql" in ledgers:
        sys.path.insert(0, str(REPO / "tests"))
        from pgserver import cluster_or_exit

        cluster = cluster_or_exit()
    try:
        rows = [(ledger, count, measure(count, cluster.new_database() if ledger == "postgresql" else ""))
                for ledger in ledgers for count in sizes]
    finally:
        if cluster:
            cluster.stop()
    report(rows)


def report(rows: list[tuple[str, int, dict]]) -> None:
    print(f"{'ledger':<11} {'readers':>9} {'sent':>9} {'send s':>7}  peak RSS MB after each step: "
          + " ".join(f"{step:>9}" for step in STEPS))
    for ledger, count, r in rows:
        peaks = " ".join(f"{r['peaks_mb'].get(step, 0):>9.1f}" for step in STEPS)
        print(f"{ledger:<11} {count:>9,} {r['sent']:>9,} {r['seconds']['send']:>7.1f}  {'':28}{peaks}")
    for ledger in dict.fromkeys(ledger for ledger, _, _ in rows):
        peaks = [(count, r["peak_rss_mb"]) for name, count, r in rows if name == ledger]
        growth = max(p for _, p in peaks) - min(p for _, p in peaks)
        verdict = "meets" if max(p for _, p in peaks) <= 100 and growth <= 10 else "misses"
        sizes = ", ".join(f"{count:,}: {peak:.0f} MB" for count, peak in peaks)
        print(f"{ledger}: peak RSS {sizes} (grows {growth:.0f} MB): {verdict} the <= 100 MB, flat within 10 MB target")


if __name__ == "__main__":
    main()
