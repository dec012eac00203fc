"""Several `newsletter send` workers on one issue of a PostgreSQL ledger: does throughput scale?

    python benchmarks/scale.py                      # 1, 2 and 4 workers on 200,000 readers, 100 ms a call
    python benchmarks/scale.py --readers 20000      # the same, smaller
    python benchmarks/scale.py --workers 1,4 --batch-size 100 --concurrency 4

Each row starts N workers at once (``newsletter send ISSUE --yes``, each a process of its own, the
way N cron lines on N machines would) on a fresh database of a throwaway PostgreSQL cluster
(tests/pgserver.py; ``ledger migrate`` first, as docs/team.md says), against the fake providers in a
process of their own (benchmarks/fakesink.py) waiting ``--latency`` ms per call. The provider is
SendGrid (the template goes once a call, each reader's values beside it: small requests, so the
fake's own CPU is not the limit) at ``--batch-size`` recipients a call and ``--concurrency`` calls
in flight per worker: one worker's pipe holds concurrency x batch / latency recipients a second.
The global rate limit is left high, so the fake's latency is the only pacing.

It prints, per worker count: recipients/s over the wall time from the first worker's start to the
last one's end (compile, list check, planning and sending included), the speed-up over one worker,
the same over the sending alone (the fake's first accepted call to its last),
and the ledger's share of the time: the seconds the workers' threads spent inside ledger calls,
summed, over the seconds those threads were alive (each from the start of its first ledger call to
the end of its last: a worker's main thread for the whole run, each sending thread while it sends,
its waits for the provider included; the heartbeat thread, asleep between beats, is left out of
the divisor). Beside it, the same seconds over workers x wall, as this script printed before: that one
counts a worker's concurrent threads against one clock, so it grows with ``--concurrency`` (past
100% at 8 in flight) whatever each call costs; and the wall seconds in which a worker had at least
one thread inside a ledger call (its calls' intervals merged), over workers x wall: the share of
the wall clock the ledger held each worker, counting two threads in it at once as one. Then the workers' CPU seconds (``--no-reserve``:
without the chunk reservations of docs/team.md, to see what they save). Target (issue 13): >= 3.2x from 1 to 4 workers, ledger < 10%. Every row
also prints how many recipients the fake received in all, beside the readers (a count: the sink does
not tell repeats apart; tests/test_workers_e2e.py checks exactly-once). Numbers only; nothing is asserted.

Beside each ledger method's seconds in the workers it prints their threads' CPU seconds inside it
(the Python of the call, psycopg and libpq). ``--server-time`` says how much was the server's: the
cluster starts with pg_stat_statements, and each row prints each method's statements' execution and
planning time on the server (lock waits included) and calls, and the CPU seconds of the server's processes. What a
call took beyond the server's time and its own CPU went on the round trip and on waiting for a core
or the GIL on the way out and back.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from dispatch import DOMAIN, ISSUE, KEY, Fake, make_workspace  # noqa: E402

# Runs in each worker: the CLI, with every public PostgresLedger method timed (outermost call only,
# so a method calling another counts once); the total goes to stderr's last line as JSON at exit.
_WORKER = """
import atexit, json, sys, threading, time
from newsletter.ledger.postgres import PostgresLedger
spent, depth, by_name, span, calls, cpu_by_name = [0.0], threading.local(), {}, {}, [], {}
def timed(method):
    def wrapper(*args, **kwargs):
        outer = not getattr(depth, "n", 0)
        depth.n = getattr(depth, "n", 0) + 1
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            depth.n -= 1
            if outer:
                end = time.perf_counter()
                took = end - start
                spent[0] += took
                calls.append((start, end))
                by_name[method.__name__] = by_name.get(method.__name__, 0.0) + took
                cpu_by_name[method.__name__] = cpu_by_name.get(method.__name__, 0.0) + time.thread_time() - cpu
                # each working thread's span, from the start of its first ledger call to the end of its
                # last; not the heartbeat's, which sleeps between beats for the whole run
                if threading.current_thread().name != "lease-heartbeat":
                    first, _ = span.get(threading.get_ident(), (start, end))
                    span[threading.get_ident()] = (first, end)
    return wrapper
for name, value in list(vars(PostgresLedger).items()):
    if callable(value) and not name.startswith("_"):
        setattr(PostgresLedger, name, timed(value))
if "--no-reserve" in sys.argv:  # every worker personalises every pending row it meets (the claim decides)
    sys.argv.remove("--no-reserve")
    PostgresLedger.reserve = lambda self, issue_id, holder, rows: None
if "--pg-bucket" in sys.argv:  # one token bucket in the database for every worker, instead of each one's share
    sys.argv.remove("--pg-bucket")
    import os, psycopg
    from newsletter.sending import pool
    waits = [0.0, 0]
    class PgBucket:
        def __init__(self, rate, burst=1.0, **kwargs):
            self.rate = float(os.environ["NEWSLETTER_PROVIDER_RATE_LIMIT"])  # the global rate, not a share
            self.db = psycopg.connect(os.environ["NEWSLETTER_LEDGER_URL"], autocommit=True)
            self.lock, self.paused_until = threading.Lock(), 0.0
        def acquire(self):
            while True:
                time.sleep(max(0.0, self.paused_until - time.time()))
                start = time.perf_counter()
                with self.lock, self.db.transaction():
                    tokens, at = self.db.execute("SELECT tokens, at FROM bench_bucket WHERE id = 1 FOR UPDATE").fetchone()
                    now = time.time()
                    tokens = min(1.0, tokens + (now - at) * self.rate)
                    got = tokens >= 1
                    self.db.execute("UPDATE bench_bucket SET tokens = %s, at = %s WHERE id = 1",
                                    (tokens - 1 if got else tokens, now))
                waits[0] += time.perf_counter() - start
                waits[1] += 1
                if got:
                    return 0.0
                time.sleep((1 - tokens) / self.rate)
        def set_rate(self, rate):
            pass
        def pause(self, seconds):
            self.paused_until = max(self.paused_until, time.time() + seconds)
    pool.TokenBucket = PgBucket
    atexit.register(lambda: print(f"bucket: {waits[1]} transactions, {1000 * waits[0] / max(1, waits[1]):.1f} ms each",
                                  file=sys.stderr))
def busy():  # the wall seconds in which at least one of this worker's threads was inside a ledger call
    total, until = 0.0, float("-inf")
    for start, end in sorted(calls):
        if end > until:
            total += end - max(start, until)
            until = end
    return total
atexit.register(lambda: print(json.dumps({"ledger_s": spent[0], "by_method": by_name, "busy_s": busy(),
                                          "cpu_by_method": cpu_by_name,
                                          "thread_s": sum(end - first for first, end in span.values())}),
                              file=sys.stderr, flush=True))
from newsletter.cli import main
main()
"""


def worker_env(url: str, ledger_url: str, args) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update({"NEWSLETTER_SECRET": "bench-secret", "NEWSLETTER_API_KEY": KEY, "NEWSLETTER_PROVIDER_NAME": "sendgrid",
                "NEWSLETTER_PROVIDER_API_BASE": url, "NEWSLETTER_PROVIDER_DOMAIN": DOMAIN,
                "NEWSLETTER_PROVIDER_RATE_LIMIT": str(args.rate_limit), "NEWSLETTER_PROVIDER_BATCH_SIZE": str(args.batch_size),
                "NEWSLETTER_PROVIDER_CONCURRENCY": str(args.concurrency), "NEWSLETTER_LEDGER_URL": ledger_url})
    return env


# --server-time: which ledger method each statement serves, by a fragment of its text (as pg_stat_statements
# keeps it: literals become $n); the first fragment found names it.
_METHOD_OF = (("WITH w AS MATERIALIZED", "claim_rows"), ("UPDATE deliveries d SET claimed_by", "reserve"),
              ("LEFT JOIN suppressions s ON s.email = d.email WHERE d.issue_id", "lookup_rows"),
              ("attempts = attempts + $", "record_rows"), ("SET state = v.state", "record_rows"),
              ("INSERT INTO deliveries", "create_plan"), ("INSERT INTO issues", "create_plan"),
              ("ANALYZE deliveries", "create_plan"), ("UPDATE issues SET planned", "create_plan"),
              ("UPDATE workers SET heartbeat", "heartbeat"))


def server_seconds(ledger_url: str) -> dict[str, list[float]]:
    """Per ledger method: [the server's execution and planning seconds, calls] of its statements since the
    last reset."""
    import psycopg

    spent: dict[str, list[float]] = {}
    with psycopg.connect(ledger_url, autocommit=True) as db:
        for query, ms, calls in db.execute("SELECT query, total_exec_time + total_plan_time, calls "
                                           "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                                           "WHERE d.datname = current_database()"):
            name = next((method for fragment, method in _METHOD_OF if fragment in query), "other")
            entry = spent.setdefault(name, [0.0, 0])
            entry[0] += ms / 1000
            entry[1] += calls
    return spent


def server_cpu(cluster) -> float:
    """CPU seconds of the server: the postmaster, its children alive now, and those that ended (cutime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(v) for v in fields[11:15]) / ticks  # utime, stime, cutime, cstime
        elif ppid == postmaster:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def run_row(root: Path, fake: Fake, ledger_url: str, workers: int, args, cluster=None) -> dict:
    env = worker_env(fake.url, ledger_url, args)
    subprocess.run([sys.executable, "-c", "from newsletter.cli import main; main()", "ledger", "migrate"],
                   cwd=root, env=env, check=True, capture_output=True)
    if args.pg_bucket:  # the bucket's one row, before any worker takes from it
        import psycopg

        with psycopg.connect(ledger_url, autocommit=True) as db:
            db.execute("CREATE TABLE bench_bucket (id INT PRIMARY KEY, tokens FLOAT8, at FLOAT8)")
            db.execute("INSERT INTO bench_bucket VALUES (1, 1, %s)", (time.time(),))
    if args.server_time:
        import psycopg

        with psycopg.connect(ledger_url, autocommit=True) as db:
            db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            db.execute("SELECT pg_stat_statements_reset()")
        server_cpu_before = server_cpu(cluster)
    fake.reset()
    start, started_at = time.perf_counter(), time.time()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    extra = (["--no-reserve"] if args.no_reserve else []) + (["--pg-bucket"] if args.pg_bucket else [])
    # Each worker's stderr (a line a batch) goes to a file: a pipe read one worker after another would
    # fill up (64 KB, some 800 batches) for the workers not yet read, and stop them mid-send.
    logs = [tempfile.TemporaryFile("w+") for _ in range(workers)]
    try:
        processes = [subprocess.Popen([sys.executable, "-c", _WORKER, "send", ISSUE, "--yes", *extra], cwd=root,
                                      env=env, stdout=subprocess.DEVNULL, stderr=log, text=True) for log in logs]
        for process in processes:
            process.wait()
        errs = []
        for log in logs:
            log.seek(0)
            errs.append(log.read())
    finally:
        for log in logs:
            log.close()
    ledger_s, thread_s, busy_s, codes, by_method, cpu_by_method = 0.0, 0.0, 0.0, [], {}, {}
    for process, err in zip(processes, errs):
        codes.append(process.returncode)
        try:
            bucket_lines = [line for line in err.splitlines() if line.startswith("bucket: ")]
            if bucket_lines:
                print(f"    worker {len(codes)}: {bucket_lines[-1]}")
            spent = json.loads([line for line in err.splitlines() if line.startswith('{"ledger_s"')][-1])
            ledger_s += spent["ledger_s"]
            thread_s += spent["thread_s"]
            busy_s += spent["busy_s"]
            for name, seconds in spent["by_method"].items():
                by_method[name] = by_method.get(name, 0.0) + seconds
            for name, seconds in spent["cpu_by_method"].items():
                cpu_by_method[name] = cpu_by_method.get(name, 0.0) + seconds
        except (ValueError, KeyError, IndexError):
            raise SystemExit(f"a worker failed (exit {process.returncode}):\n{err[-3000:]}") from None
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    stats = fake.stats()
    server = {}
    if args.server_time:
        time.sleep(0.5)  # the workers' backends end once their connections close
        server = {"cpu": server_cpu(cluster) - server_cpu_before, "by_method": server_seconds(ledger_url)}
    return {"server": server, "workers": workers, "wall": wall, "cpu": cpu, "requests": stats["requests"],
            "call_rate": stats["requests"] / max(1e-9, stats["last"] - stats["first"]),
            "send_rate": sum(stats["recipients"].values()) / max(1e-9, stats["last"] - stats["first"]), "rate": args.readers / wall, "ledger": ledger_s / (workers * wall),
            "ledger_thread": ledger_s / max(1e-9, thread_s), "ledger_busy": busy_s / (workers * wall),
            "first_call": stats["first"] - started_at, "after_last": started_at + wall - stats["last"],
            "received": sum(stats["recipients"].values()), "codes": codes,
            "by_method": dict(sorted(by_method.items(), key=lambda item: -item[1])[:5]),
            "cpu_by_method": cpu_by_method}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--latency", type=float, default=100.0, metavar="MS", help="the fake's wait per call")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2, help="calls in flight per worker")
    parser.add_argument("--rate-limit", type=float, default=100_000, metavar="N",
                        help="[provider] rate_limit, requests/s for all workers together (each takes its share)")
    parser.add_argument("--pg-bucket", action="store_true",
                        help="pace all workers with one token bucket row in PostgreSQL instead of each taking "
                             "rate_limit / live workers (a prototype, here only, to compare the two)")
    parser.add_argument("--no-reserve", action="store_true",
                        help="workers do not reserve chunks: each personalises every pending row it meets")
    parser.add_argument("--server-time", action="store_true",
                        help="also print each ledger method's execution and planning time on the server (pg_stat_statements) "
                             "and the server's CPU")
    args = parser.parse_args()
    from pgserver import cluster_or_exit

    cluster = cluster_or_exit("-c shared_preload_libraries=pg_stat_statements "
                              "-c pg_stat_statements.track_planning=on" if args.server_time else "")
    fake = Fake("sink", args.latency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = make_workspace(Path(tmp), args.readers)
            pipe = args.concurrency * args.batch_size / (args.latency / 1000) if args.latency else float("inf")
            print(f"{args.readers:,} readers, SendGrid at {args.batch_size} a call, {args.concurrency} in flight "
                  f"per worker, {args.latency:g} ms a call (one worker's pipe: {pipe:,.0f}/s)")
            for count in (int(n) for n in args.workers.split(",")):
                row = run_row(root, fake, cluster.new_database(), count, args, cluster)
                rows.append(row)
                base = rows[0]["rate"]
                send_base = rows[0]["send_rate"]
                print(f"{count} worker(s): {row['rate']:8,.0f} recipients/s  {row['rate'] / base:4.2f}x  "
                      f"(sending only: {row['send_rate']:,.0f}/s, {row['send_rate'] / send_base:4.2f}x)  "
                      f"wall {row['wall']:6.1f} s  ledger {100 * row['ledger_thread']:4.1f}% of its threads' time "
                      f"({100 * row['ledger']:4.1f}% of workers x wall; a worker in the ledger {100 * row['ledger_busy']:4.1f}% of the wall)  "
                      f"first call at {row['first_call']:.1f} s, last {row['after_last']:.1f} s before the end  "
                      f"workers' CPU {row['cpu']:.1f} s  calls/s at the fake {row['call_rate']:.1f}  received {row['received']:,} of {args.readers:,}  exit codes {row['codes']}\n    ledger s by method: "
                      + ", ".join(f"{name} {seconds:.1f} (CPU {row['cpu_by_method'].get(name, 0):.1f})"
                                  for name, seconds in row["by_method"].items()),
                      flush=True)
                if row["server"]:
                    spent = row["server"]["by_method"]
                    print(f"    on the server: CPU {row['server']['cpu']:.1f} s; its statements' execution time "
                          f"(calls) by method: " + ", ".join(
                              f"{name} {seconds:.1f} s ({int(calls):,}; {1000 * seconds / max(1, calls):.2f} ms each)"
                              for name, (seconds, calls) in sorted(spent.items(), key=lambda item: -item[1][0])),
                          flush=True)
    finally:
        fake.close()
        cluster.stop()


if __name__ == "__main__":
    main()
