"""Load + validate a subscriber list of 100k and 1M rows: seconds and peak RSS, against a plain csv.reader.

    python benchmarks/subscribers.py                  # 100k and 1M rows
    python benchmarks/subscribers.py --rows 20000     # any sizes
    python benchmarks/subscribers.py --keep /tmp/lists  # keep (and reuse) the generated files

Each task runs in a fresh process, so its peak RSS is its own. "growth" is the
peak minus the RSS after imports: what the task itself held. "CPU s" is the
process's CPU time (one core), which other load on the machine does not inflate;
"x base" compares it with the baseline's. Tasks:

  baseline    csv.reader over the file, no validation (the floor)
  validate    validate_list(): every row checked, duplicates found (Bloom filter + confirmation pass)
  stream      iter_subscribers() alone: every row checked and built, one at a time
  keys        iter_eligible_keys(): every row checked, the keys of those in segment "weekly" (a plan's
              and a send's summary walk), without building each subscriber: compare with "stream"
  send-loop   what `send` does: check_list() then iter_subscribers() + eligible() streamed
  load-all    load_subscribers(): every row in memory (build/preview; for contrast)

Target (issue 3): 1M rows validated in under 20 s on one core; memory must not
grow with the file beyond the rows' own size when streamed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("baseline", "validate", "stream", "keys", "send-loop", "load-all")
FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Zoë", "José", "Åsa", "Chidi", "美咲", "Søren", "O'Brien"]
LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton, MIT", 'Turing "AT"', "Núñez", "山田", "Ørsted"]
DOMAINS = [f"mail{i}.example.com" for i in range(300)] + ["gmail.com", "outlook.com", "yahoo.co.uk", "web.de"]


def generate(path: Path, rows: int) -> None:
    rng = random.Random(rows)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["email", "name", "status", "tags", "subscribed_at", "city", "company"])
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            out.writerow([f"{first.lower()}.{i}@{rng.choice(DOMAINS)}" if first.isascii() else f"user{i}@{rng.choice(DOMAINS)}",
                          f"{first} {last}", rng.choice(["subscribed"] * 6 + ["", "unsubscribed", "bounced"]),
                          rng.choice(["weekly", "weekly;founders", "", "news;weekly"]),
                          f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                          rng.choice(["London", "Bristol", "東京", "São Paulo", ""]), rng.choice(["", "ACME, Inc."])])


def rss_now_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(task: str, path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from newsletter.subscribers.reader import (check_list, eligible, iter_eligible_keys, iter_subscribers,
                                              load_subscribers, validate_list)

    start_rss = rss_now_mb()
    started, cpu = time.perf_counter(), time.process_time()
    if task == "baseline":
        with open(path, encoding="utf-8", newline="") as fh:
            rows = sum(1 for _ in csv.reader(fh)) - 1
    elif task == "validate":
        problems = validate_list(path)
        assert not problems, problems[:3]
        rows = -1
    elif task == "stream":
        rows = sum(1 for _ in iter_subscribers(path))
    elif task == "keys":
        rows = sum(1 for _ in iter_eligible_keys(path, "weekly"))
    elif task == "send-loop":
        skip = check_list(path)
        rows = sum(1 for s in iter_subscribers(path, skip=skip) if eligible(s, "weekly"))
    else:
        rows = len(load_subscribers(path))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak": peak, "growth": peak - start_rss, "rows": rows}))


def measure(task: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", task, str(path)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--keep", type=Path, help="folder for the generated lists (reused when present)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s); each task in its own process\n")
    print(f"{'rows':>9}  {'task':<10} {'seconds':>8} {'CPU s':>7} {'x base':>7} {'peak RSS':>9} {'growth':>8} "
          f"{'file':>8}")
    verdicts = []
    for rows in args.rows:
        path = folder / f"list-{rows}.csv"
        if not path.exists():
            generate(path, rows)
        size = path.stat().st_size / 2**20
        base = None
        for task in args.tasks:
            m = measure(task, path)
            base = base or (m["cpu"] if task == "baseline" else None)
            ratio = f"{m['cpu'] / base:6.1f}x" if base else "      -"
            print(f"{rows:>9}  {task:<10} {m['seconds']:>8.2f} {m['cpu']:>7.2f} {ratio:>7} {m['peak']:>7.0f}MB "
                  f"{m['growth']:>6.0f}MB {size:>6.0f}MB", flush=True)
            if task == "validate" and rows >= 1_000_000:
                verdicts.append(f"{rows} rows validated in {m['seconds']:.1f} s ({m['cpu']:.1f} s of CPU): "
                                f"{'meets' if m['seconds'] < 20 else 'MISSES'} the 20 s target")
    for verdict in verdicts:
        print("\n" + verdict)
    if not args.keep:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
