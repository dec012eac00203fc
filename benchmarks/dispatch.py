"""The send path against a local fake of each provider, beside a bare ``requests`` loop of the same payloads.

    python benchmarks/dispatch.py                 # 100,000 recipients per provider; RSS at 10k, 200k and 1M
    python benchmarks/dispatch.py --quick         # 5,000 per provider; RSS at 2k and 20k
    python benchmarks/dispatch.py --providers postmark --recipients 20000 --rss-sizes 0
    python benchmarks/dispatch.py --fake faithful # the fake's full per-recipient work (a check, slower)
    python benchmarks/dispatch.py --latency 150   # each call takes 150 ms at the fake; 8 in flight

At real latency (``--latency MS``, default concurrency 8): each provider at its
maximum batch, the baseline as that many threads (one keep-alive session each,
the same payloads) and the tool with ``[provider] concurrency`` set to it. The
pipe holds concurrency x batch / latency recipients a second ("pipe /s"); the
tool should keep it as full as the baseline does (target >= 0.8x). ``--prebuilt``
walks, looks up and personalises the whole list into batches before the tool's
clock starts, so its send only hands them to the workers: not a verdict, the
ceiling of the rest of the loop (what a second process doing that feed could at
best give; benchmarks/README.md, "fourth round"). Large template-once sends
feed their workers from a second process (sending/feedprocess.py);
``--no-feed-process`` keeps the feed in the sending process, to compare.

For each provider (Postmark, SendGrid, Mailgun, Resend, Amazon SES, Brevo) against the fake of
``tests/fakeproviders.py``, in zero-latency mode (``benchmarks/fakesink.py``, its
own process):

* wire: a bare ``requests`` loop, one connection, posting again and again the
  request bodies the adapter built for the first batches, encoded before the
  clock starts: the physical limit of this machine and fake;
* requests (the baseline): the same loop handing ``requests`` the same payloads
  as a plain client holds them (JSON bodies as Python objects, ``json=``; Mailgun's
  form fields, ``files=``), so each call encodes its body;
* tool: what ``newsletter send ISSUE --yes`` does after compiling, on a fresh
  workspace and ledger: check the list, summary, freeze the plan, then the send
  loop (list streamed, ledger look-ups, personalisation, claims, API calls by the
  configured workers, records). Rate limit off.

"send /s" is recipients over the send loop's seconds, compared with the baseline
("x base"; target >= 0.8) and the wire ("x wire"); "run /s" counts the steps
before it too. Bytes per recipient are what the fake received. "ledger ms/batch"
is the claim and record of one batch (wall time in the calls, waiting for the
ledger's lock included). "fake busy" is the fake's CPU over the loop's seconds
(near 100%: the fake, not the client, is the limit).
Two more rows without HTTP: ``noop`` (a provider that fills each body like
Postmark's and accepts at once: the send loop's own ceiling) and ``outbox``
(fsync'ed ``.eml`` files). Then peak RSS of the tool with Postmark (the largest
requests) at 10k and 200k recipients, and of the noop provider at 1M (the fake's
HTTP server cannot take a million Postmark-sized bodies in reasonable time; the
list, plan, ledger and personalisation are the same): target <= 100 MB, flat.

Each row runs in its own process, so its peak RSS is its own. Numbers only;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
ISSUE = "2026-11-30-weekly"
PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend", "ses", "brevo")
KEY, DOMAIN = "fake-key", "mg.example.com"


# -- in the child process -----------------------------------------------------------------------
def make_workspace(root: Path, count: int) -> Path:
    shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")
    for folder in ("templates", "issues"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "subscribers").mkdir()
    with open(root / "subscribers" / "subscribers.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "status", "tags", "city"])
        for n in range(count):
            writer.writerow([f"reader{n:07d}@example.com", f"Reader {n}" if n % 5 else "", "subscribed", "weekly",
                             "Bristol" if n % 3 else ""])
    return root


def settings_for(root: Path, provider: str, url: str, concurrency: int = 0, ledger_url: str = ""):
    from newsletter.config import load

    sys.path.insert(0, str(REPO / "tests"))
    from fakeproviders import SES_ACCESS_KEY

    env = {"NEWSLETTER_SECRET": "bench-secret", "NEWSLETTER_API_KEY": KEY,
           "NEWSLETTER_PROVIDER_NAME": provider if provider in PROVIDERS else "outbox",
           "NEWSLETTER_PROVIDER_API_BASE": url, "NEWSLETTER_PROVIDER_DOMAIN": DOMAIN,
           "NEWSLETTER_PROVIDER_RATE_LIMIT": "1000000",  # no pacing: the fake answers at once
           # SES signs with AWS credentials: the fake's access key, the key as its secret
           "AWS_ACCESS_KEY_ID": SES_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": KEY, "AWS_REGION": "eu-west-1"}
    if concurrency:
        env["NEWSLETTER_PROVIDER_CONCURRENCY"] = str(concurrency)
    if ledger_url:  # benchmarks/memory.py: a PostgreSQL ledger
        env["NEWSLETTER_LEDGER_URL"] = ledger_url
    return load(root / "newsletter.toml", env=env)


def make_provider(settings, kind: str):
    from newsletter.models import Outcome
    from newsletter.providers import open_provider
    from newsletter.providers.base import Provider

    class NoopProvider(Provider):
        name, max_batch, default_rate, idempotent, needs_api_key = "noop", 500, 0.0, True, False
        fills_bodies = True  # like Postmark and Resend: bodies are filled (encoded) per message

        delivers_through_session = False

        # The shared send path (Provider.send_batch) with a transport that only encodes the bodies.
        def build_request(self, batch):
            return batch

        def transmit(self, batch, session):
            for _ in self.message_bodies(batch):
                pass
            return batch

        def parse_response(self, batch, response):
            return [Outcome(m.to, "sent", provider_id="x") for m in batch.messages]

    return NoopProvider(settings) if kind == "noop" else open_provider(settings)


def timed(obj, name: str, clock: dict, lock: threading.Lock | None) -> None:
    """Wrap ``obj.name`` so its seconds (summed over threads) and calls add up in ``clock``.

    ``lock`` None: only one thread calls it (personalising, per recipient), so the sums need no lock,
    and the wrapper adds as little as it can to the tool's CPU (a locked one added ~1 us a recipient)."""
    original = getattr(obj, name)
    clock[name] = [0.0, 0]
    total = clock[name]
    perf_counter = time.perf_counter

    def wrapper(*args, **kwargs):
        start = perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if lock is None:
                total[0] += perf_counter() - start
                total[1] += 1
            else:
                with lock:
                    total[0] += perf_counter() - start
                    total[1] += 1

    setattr(obj, name, wrapper)


class TimedLock:
    """A lock (the ledger's) that adds the seconds its users waited to acquire it to ``clock["lock wait"]``."""

    def __init__(self, lock, clock: dict, clock_lock: threading.Lock):
        self.lock, self.clock, self.clock_lock = lock, clock, clock_lock

    def acquire(self, *args, **kwargs):
        start = time.perf_counter()
        got = self.lock.acquire(*args, **kwargs)
        waited = time.perf_counter() - start
        with self.clock_lock:
            seconds, calls = self.clock.get("lock wait", (0.0, 0))
            self.clock["lock wait"] = (seconds + waited, calls + 1)
        return got

    def release(self):
        self.lock.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def peak_rss_mb() -> float:
    """The process's peak RSS so far (VmHWM), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_tool(root: Path, kind: str, url: str, concurrency: int = 0, ledger_url: str = "") -> dict:
    """The steps of ``newsletter send --yes`` after the compile, each timed, with the peak RSS after each."""
    from newsletter.compile.pipeline import build_issue
    from newsletter.ledger import open_ledger
    from newsletter.sending import feedprocess
    from newsletter.sending.lease import LeaseKeeper
    from newsletter.sending.plan import SendOptions, SendRun
    from newsletter.subscribers.reader import iter_subscribers

    if os.environ.get("BENCH_SWITCH_MS"):  # --switch-interval: how long a thread may keep the GIL
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_MS"]) / 1000)
    settings = settings_for(root, kind, url, concurrency, ledger_url)
    build = build_issue(settings, ISSUE)
    provider = make_provider(settings, kind)
    laps: dict[str, float] = {}
    peaks: dict[str, float] = {"build": peak_rss_mb()}
    last = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        laps[name], last[0] = now - last[0], now
        peaks[name] = peak_rss_mb()

    listed = sum(1 for _ in iter_subscribers(build.list_path))  # one bare pass over the list, for scale
    lap("list pass")
    clock: dict = {}
    lock = threading.Lock()
    for name in ("build_request", "send_batch"):
        timed(provider, name, clock, lock)
    with open_ledger(settings) as ledger:
        for name in ("claim_rows", "record", "lookup_rows", "skip"):
            timed(ledger, name, clock, lock)
        ledger._lock = TimedLock(ledger._lock, clock, lock)  # the writers' lock: how long batches queue for it
        lap("open")
        run = SendRun(settings, build, provider, ledger, SendOptions(), secret=b"bench-secret")  # checks the list
        timed(run.personalizer, "message_with_values", clock, None)  # only the thread feeding the pool
        lap("check")
        with LeaseKeeper(ledger, ISSUE) as keeper:
            run.summary()
            lap("summary")
            run.freeze_plan()
            lap("plan")
            if os.environ.get("BENCH_PREBUILT"):  # --prebuilt
                prebuild_feed(run, keeper.holder)
                lap("prebuild")
            if os.environ.get("BENCH_NO_FEED_PROCESS") or os.environ.get("BENCH_PREBUILT"):
                feedprocess.MIN_READERS = sys.maxsize  # --prebuilt: the batches are in this process already
            cpu, children = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
            # This thread feeds the workers: it walks, looks up and personalises the list (SendRun._feed), or
            # hands over what the feed's process sends (sending/feedprocess.py); no worker can take it over.
            feed_cpu = time.thread_time()
            totals = run.send(keeper.holder, on_batch=lambda report: None, keeper=keeper)
            feed_cpu = time.thread_time() - feed_cpu
            cpu = time.process_time() - cpu
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the feed's process, where it had one
            helper_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
            helper_rss_mb = after.ru_maxrss / 1024 if helper_cpu else 0.0  # Linux: KiB, the largest child
            lap("send")
        counts = ledger.counts(ISSUE)
    provider.close()
    laps["run"] = sum(laps[k] for k in ("check", "summary", "plan", "send"))
    return {"recipients": listed, "sent": counts["sent"], "batches": totals.batches, "aborted": totals.aborted,
            "seconds": laps, "peaks_mb": peaks, "clock": clock, "workers": settings.provider.concurrency,
            "batch": provider.batch_size, "send_cpu": cpu, "feed_cpu": feed_cpu,
            "helper_cpu": helper_cpu, "helper_rss_mb": helper_rss_mb}


class Handover:
    """What SendRun._feed needs of a dispatcher, for --prebuilt: each batch goes to ``put`` (every reader of
    the benchmark's list is eligible and valid: a reader's failure stops it)."""

    aborted = False

    def __init__(self, put) -> None:
        self.put = put

    def submit(self, work) -> bool:
        self.put(work)
        return True

    def recipient_failed(self, err) -> None:
        raise err


def prebuild_feed(run, holder: str) -> None:
    """--prebuilt: walk, look up and personalise the whole list into the batches the workers take before
    the clock starts, so that the timed send only hands them over. An upper bound, not a send: the loop
    as if the thread feeding the workers cost nothing (the most a second process doing it could give)."""
    works = []
    run._feed(Handover(works.append), holder)
    run._feed = lambda dispatcher, _holder: all(dispatcher.submit(work) for work in works)


def first_requests(settings, kind: str) -> list[tuple[int, object]]:
    """The adapter's own requests for the first three batches of the list: (recipients, Request)."""
    from newsletter.compile.pipeline import build_issue, personalizer
    from newsletter.providers.base import Batch
    from newsletter.subscribers.reader import iter_subscribers

    build = build_issue(settings, ISSUE)
    provider = make_provider(settings, kind)
    person = personalizer(settings, build.compiled, secret=b"bench-secret")
    template = {"subject": build.compiled.subject, "html": build.compiled.html, "text": build.compiled.text}
    readers = iter_subscribers(build.list_path)
    # personalised as the send loop does (plan.py): the same weights, so the same cut into batches
    weigh = "bodies" if provider.fills_bodies else "values" if provider.substitutes else ""
    first = [person.message_with_values(s, bodies=provider.needs_bodies, weigh=weigh)
             for _, s in zip(range(3 * provider.batch_size), readers)]
    values = {id(m): v for m, v in first}
    out = []
    for n, group in enumerate(provider.cut_batches(m for m, _ in first)):
        batch = Batch(ISSUE, f"base{n:04d}", tuple(group), tuple(values[id(m)] for m in group), template)
        out.append((len(group), as_plain_client(provider.build_request(batch))))
    return out


def as_plain_client(request):
    """The request as a plain client holds it: a JSON body as Python objects (``json=``), not the
    bytes Postmark's, Resend's and SendGrid's adapters assemble from pre-encoded parts; a form as its
    fields (``files=``), not the multipart bytes Mailgun's adapter writes."""
    from dataclasses import replace

    content_type = request.headers.get("Content-Type", "")
    if request.json is None and isinstance(request.data, bytes) and content_type.startswith("application/json"):
        return replace(request, json=json.loads(request.data), data=None)
    if isinstance(request.data, bytes) and content_type.startswith("multipart/form-data"):
        sys.path.insert(0, str(REPO / "tests"))
        from fakeproviders import _multipart

        fields = _multipart(content_type, request.data)
        headers = {k: v for k, v in request.headers.items() if k != "Content-Type"}
        return replace(request, headers=headers, data=None,
                       files=[(name, (None, value)) for name, values in fields.items() for value in values])
    return request


def run_baseline(root: Path, kind: str, url: str, *, wire: bool, concurrency: int = 0) -> dict:
    """A bare requests loop posting the adapter's requests for the first batches over and over; with
    ``concurrency``, that many threads, each with its own keep-alive session, taking the next call in turn.

    ``wire``: the bodies are encoded before the clock starts (``PreparedRequest``), so only the
    bytes' trip is timed; otherwise each call encodes its JSON or multipart body, as any client must.
    """
    import requests

    from newsletter.subscribers.reader import iter_subscribers

    settings = settings_for(root, kind, url)
    total = sum(1 for _ in iter_subscribers(settings.workspace_path(settings.subscribers.file)))
    batches = first_requests(settings, kind)
    counter = {"sent": 0, "calls": 0}
    turn = threading.Lock()
    failures: list[str] = []

    def next_call() -> int | None:
        with turn:
            if counter["sent"] >= total or failures:
                return None
            n = counter["calls"]
            counter["calls"] += 1
            counter["sent"] += batches[n % len(batches)][0]
            return n

    def worker() -> None:
        session = requests.Session()
        prepared = [session.prepare_request(requests.Request(r.method, r.url, headers=dict(r.headers), json=r.json,
                                                             data=r.data, files=r.files)) for _, r in batches]
        while (n := next_call()) is not None:
            r = batches[n % len(batches)][1]
            headers = dict(r.headers)
            if "Idempotency-Key" in headers:  # a replay would be answered from the fake's memory
                headers["Idempotency-Key"] = f"{ISSUE}/baseline-{n}"
            if wire:
                request = prepared[n % len(batches)].copy()
                request.headers.update(headers)
                response = session.send(request, timeout=60)
            else:
                response = session.request(r.method, r.url, headers=headers, json=r.json, data=r.data,
                                           files=r.files, timeout=60)
            if response.status_code >= 300:
                failures.append(f"baseline: the fake answered HTTP {response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(max(1, concurrency))]
    started, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if failures:
        raise SystemExit(failures[0])
    sent = counter["sent"]
    return {"recipients": sent, "sent": sent, "batches": counter["calls"], "seconds": {"send": seconds, "run": seconds},
            "clock": {}, "send_cpu": cpu}


def child(kind: str, role: str, count: int, url: str, concurrency: int) -> None:
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="newsletter-bench-") as tmp:
        root = make_workspace(Path(tmp), count)
        if role == "tool":
            result = run_tool(root, kind, url, concurrency)
        else:
            result = run_baseline(root, kind, url, wire=role == "wire", concurrency=concurrency)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


# -- in the parent ------------------------------------------------------------------------------
class Fake:
    """The fake providers in a process of their own (``benchmarks/fakesink.py``), with their counters."""

    def __init__(self, mode: str, latency_ms: float = 0.0):
        args = [sys.executable, str(HERE / "fakesink.py"), "--key", KEY, "--domain", DOMAIN,
                "--latency", str(latency_ms)]
        self.process = subprocess.Popen(args + (["--faithful"] if mode == "faithful" else []),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = json.loads(self.process.stdout.readline())["url"]

    def _call(self, path: str, data: bytes | None = None) -> dict:
        from urllib.request import urlopen

        with urlopen(self.url + path, data=data, timeout=30) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._call("/_bench/reset", b"")

    def stats(self) -> dict:
        return self._call("/_bench/stats")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(10)


def measure(fake: Fake, kind: str, role: str, count: int, concurrency: int = 0) -> dict:
    fake.reset()
    out = subprocess.run([sys.executable, __file__, "--child", kind, role, str(count), fake.url, str(concurrency)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{kind} {role} ({count}) failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["fake"] = fake.stats()
    result["kind"], result["role"], result["count"] = kind, role, count
    return result


def check(r: dict) -> str:
    """What went wrong with a run's deliveries ("" when every recipient was sent once)."""
    problems = []
    short = r["sent"] < r["count"] if r["role"] != "tool" else r["sent"] != r["count"]  # baselines end on a whole batch
    if short:
        problems.append(f"{r['sent']} of {r['count']} sent" + (f" ({r['aborted']})" if r.get("aborted") else ""))
    if r["role"] != "tool" or r["kind"] not in PROVIDERS:
        return "; ".join(problems)  # baselines post their first batches again and again
    got = sum(r["fake"]["recipients"].values())
    if got != r["count"]:
        problems.append(f"the fake counted {got} recipients")
    if r["fake"]["repeats"]:
        problems.append(f"{r['fake']['repeats']} addresses received twice")
    return "; ".join(problems)


def rate(r: dict | None) -> float | None:
    return r["count"] / r["seconds"]["send"] if r else None


def print_throughput(rows: list[dict]) -> None:
    print(f"{'provider':<9} {'recipients':>10} {'wire /s':>9} {'requests /s':>12} {'send /s':>9} {'x base':>7} "
          f"{'x wire':>7} {'run /s':>8} {'bytes/recip':>12} {'fake busy':>10} {'CPU us/recip base/tool':>23}")
    for row in rows:
        tool, base, wire = row["tool"], row.get("baseline"), row.get("wire")
        send_rate, base_rate, wire_rate = rate(tool), rate(base), rate(wire)
        per = tool["fake"]["bytes"] / tool["count"] if tool["fake"]["bytes"] else 0
        busy = "/".join(f"{r['fake']['cpu'] / r['seconds']['send']:.0%}" for r in (wire, base, tool)
                        if r and r["fake"]["bytes"]) or "-"
        print(f"{tool['kind']:<9} {tool['count']:>10,} {_num(wire_rate):>9} {_num(base_rate):>12} {send_rate:>9,.0f} "
              f"{_ratio(send_rate, base_rate):>7} {_ratio(send_rate, wire_rate):>7} "
              f"{tool['count'] / tool['seconds']['run']:>8,.0f} {_num(per):>12} {busy:>10} {_cpu(base, tool):>23}")
        for r in (base, wire, tool):
            if r and check(r):
                print(f"  CHECK {r['kind']} {r['role']}: {check(r)}")


def _cpu(*runs: dict | None) -> str:
    """Each run's CPU microseconds per recipient in its send loop (all its threads): the measure the
    machine's other load inflates least."""
    return "/".join(f"{r['send_cpu'] * 1e6 / r['count']:.1f}" for r in runs if r)


def _num(value: float | None) -> str:
    return f"{value:,.0f}" if value else "-"


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}" if b else "-"


def print_breakdown(tools: list[dict]) -> None:
    print(f"{'provider':<9} {'recipients':>10} {'check':>6} {'summary':>8} {'plan':>6} {'send':>6} "
          f"{'list pass':>10} {'personalise':>12} {'build req':>10} {'API calls':>10} {'ledger ms/batch':>16} "
          f"{'lock wait ms/batch':>19} {'ledger us/recip':>16} {'lookup ms':>10} {'peak RSS MB':>12}")
    for r in tools:
        s, c = r["seconds"], r["clock"]
        ledger = (c.get("claim_rows", [0])[0] + c.get("record", [0])[0]) * 1000 / max(1, r["batches"])
        lookup = c.get("lookup_rows", [0, 1])
        wait = c.get("lock wait", [0])[0] * 1000 / max(1, r["batches"])
        # the ledger's own work per recipient: claim + record time, less the waits for the lock
        work = (c.get("claim_rows", [0])[0] + c.get("record", [0])[0] - c.get("lock wait", [0])[0]) * 1e6 / max(1, r["count"])
        print(f"{r['kind']:<9} {r['count']:>10,} {s['check']:>6.2f} {s['summary']:>8.2f} {s['plan']:>6.2f} "
              f"{s['send']:>6.2f} {s['list pass']:>10.2f} {c.get('message_with_values', [0])[0]:>12.2f} "
              f"{c.get('build_request', [0])[0]:>10.2f} {c.get('send_batch', [0])[0]:>10.2f} {ledger:>16.2f} "
              f"{wait:>19.2f} {work:>16.1f} {lookup[0] * 1000 / max(1, lookup[1]):>10.2f} {r['peak_rss_mb']:>12.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, help="list size for the provider rows [100,000]")
    parser.add_argument("--providers", default=",".join(PROVIDERS) + ",noop,outbox",
                        help="rows to run (postmark,sendgrid,mailgun,resend,noop,outbox)")
    parser.add_argument("--rss-sizes", help="list sizes for peak RSS, each N (through --rss-provider) or "
                                            "PROVIDER:N; 0 for none [10000,200000,noop:1000000]")
    parser.add_argument("--rss-provider", default="postmark", help="the provider of the RSS rows")
    parser.add_argument("--outbox-size", type=int, help="list size for the outbox row (fsync bound) [2,000]")
    parser.add_argument("--fake", choices=("sink", "faithful"), default="sink")
    parser.add_argument("--quick", action="store_true", help="defaults of 5,000 recipients, RSS at 2,000 and "
                                                                 "20,000, outbox 200")
    parser.add_argument("--latency", type=float, default=0.0, metavar="MS",
                        help="each call's time at the fake, in ms (a real provider: 100-500) [0]")
    parser.add_argument("--concurrency", type=int, help="calls in flight: the tool's [provider] concurrency and the "
                                                        "baseline's threads [8 with --latency; else the tool's "
                                                        "default and one baseline thread]")
    parser.add_argument("--switch-interval", type=float, metavar="MS",
                        help="the tool's sys.setswitchinterval, in ms [Python's 5]: a ledger call that gives up the "
                             "GIL for SQLite waits up to this long to get it back, holding the ledger's lock")
    parser.add_argument("--prebuilt", action="store_true",
                        help="the tool's rows only: personalise the whole list into batches before the clock "
                             "starts, so the send only hands them to the workers (an upper bound: the send "
                             "loop as if the thread feeding the workers cost nothing)")
    parser.add_argument("--no-feed-process", action="store_true",
                        help="the tool's rows only: keep the feed (walk, look-up, personalise, cut) in the sending "
                             "process, as before sending/feedprocess.py, to compare")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, role, count, url, concurrency = args.child
        child(kind, role, int(count), url, int(concurrency))
        return
    if args.concurrency is None:
        args.concurrency = 8 if args.latency else 0
    if args.switch_interval:
        os.environ["BENCH_SWITCH_MS"] = str(args.switch_interval)  # the children inherit it
    if args.prebuilt:
        os.environ["BENCH_PREBUILT"] = "1"
    if args.no_feed_process:
        os.environ["BENCH_NO_FEED_PROCESS"] = "1"
    defaults = (5000, "2000,20000", 200) if args.quick else (100_000, "10000,200000,noop:1000000", 2000)
    args.recipients = args.recipients or defaults[0]
    args.rss_sizes = args.rss_sizes or defaults[1]
    args.outbox_size = args.outbox_size or defaults[2]
    kinds = [k for k in args.providers.split(",") if k]
    rss_rows = [(kind or args.rss_provider, int(n)) for kind, _, n in
                (entry.rpartition(":") for entry in args.rss_sizes.split(",")) if int(n)]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), fake providers: {args.fake}, "
          f"latency {args.latency:g} ms, concurrency {args.concurrency or 'default'}; each row in its own process; "
          f"load average {os.getloadavg()[0]:.1f}\n", flush=True)
    fake = Fake(args.fake, args.latency)
    try:
        rows = []
        for kind in kinds:
            count = args.outbox_size if kind == "outbox" else args.recipients
            roles = ("wire", "baseline", "tool") if kind in PROVIDERS else ("tool",)
            rows.append({role: measure(fake, kind, role, count, args.concurrency) for role in roles})
        rss = [measure(fake, kind, "tool", n, args.concurrency) for kind, n in rss_rows]
    finally:
        fake.close()
    report(rows, rss, args.latency)


def cpu_budget(tool: dict, baseline_rate: float) -> str:
    """What the tool's CPU per recipient costs at 0.8x the baseline's rate: Python runs one thread of a
    process at a time, so more than one core of it cannot be had, however many threads wait."""
    count, want = tool["count"], 0.8 * baseline_rate
    process_us, feed_us = tool["send_cpu"] * 1e6 / count, tool.get("feed_cpu", 0.0) * 1e6 / count
    return (f"CPU per recipient: {process_us:.1f} us in the process ({1e6 / process_us:,.0f}/s a core), "
            f"{feed_us:.1f} us of it in the thread that feeds the workers; 0.8x the baseline "
            f"({want:,.0f}/s) needs {want * process_us / 1e6:.2f} cores of it, and its Python runs on one core "
            f"at a time (beside it only SQLite's own work, part of the ledger's share in sendparts.py, and the "
            f"kernel's; {os.cpu_count()} CPUs here)"
            + (f"; the feed's own process: {tool['helper_cpu'] * 1e6 / count:.1f} us more, peak RSS "
               f"{tool.get('helper_rss_mb', 0):.0f} MB" if tool.get("helper_cpu") else "")
            + "\n  " + machine_budget(tool, want))


def machine_budget(tool: dict, want: float) -> str:
    """The whole machine's CPU at 0.8x the baseline: the tool's processes and the fake share its cores, so a
    target that needs most of them cannot be met here however the work is split between processes."""
    count = tool["count"]
    tool_us = (tool["send_cpu"] + tool.get("helper_cpu", 0.0)) * 1e6 / count
    fake_us = tool["fake"]["cpu"] * 1e6 / count
    cores = os.cpu_count() or 1
    return (f"the machine: {tool_us + fake_us:.1f} us of CPU a recipient (the tool's processes {tool_us:.1f}, the "
            f"fake {fake_us:.1f}); at 0.8x the baseline that is {want * (tool_us + fake_us) / 1e6:.2f} of its "
            f"{cores} cores busy (user and system time of each process)")


def report(rows: list[dict], rss: list[dict], latency_ms: float = 0.0) -> None:
    print("Throughput, recipients/s. wire: the same bodies pre-encoded (the machine's limit); requests: a bare "
          "requests loop\nencoding each body (the baseline); send: the tool's send loop; run: with check, "
          "summary and plan.\nfake busy: the fake's CPU share (wire/requests/tool).")
    print_throughput(rows)
    print("\nWhere the tool's time goes (seconds; personalise, build req and API calls are summed over threads)")
    print_breakdown([row["tool"] for row in rows] + rss)
    print()
    for row in rows:
        if "baseline" in row:
            ratio = rate(row["tool"]) / rate(row["baseline"])
            tool = row["tool"]
            pipe = (f"; the pipe holds {tool['workers'] * tool['batch'] / (latency_ms / 1000):,.0f}/s "
                    f"({tool['workers']} x {tool['batch']} per {latency_ms:g} ms)" if latency_ms else "")
            print(f"{tool['kind']}: {ratio:.2f}x the bare-requests baseline "
                  f"({rate(tool) / rate(row['wire']):.2f}x the pre-encoded wire limit{pipe}): "
                  + ("--prebuilt, an upper bound with the list personalised before the clock started, not "
                     "a verdict" if os.environ.get("BENCH_PREBUILT") else
                     f"{'meets' if ratio >= 0.8 else 'MISSES'} the 0.8x target"))
            print("  " + cpu_budget(tool, rate(row["baseline"])))
    if rss:
        peaks = [r["peak_rss_mb"] for r in rss]
        sizes = ", ".join(f"{r['kind']} {r['count']:,}: {r['peak_rss_mb']:.0f} MB" for r in rss)
        by_kind: dict[str, list[float]] = {}
        for r in rss:  # flat: one provider's peaks, whatever the list's size
            by_kind.setdefault(r["kind"], []).append(r["peak_rss_mb"])
        flat = all(max(p) - min(p) <= 10 for p in by_kind.values())
        verdict = "meets" if max(peaks) <= 100 and flat else "MISSES"
        print(f"peak RSS at {sizes}: {verdict} the <= 100 MB and flat (within 10 MB) target")


if __name__ == "__main__":
    main()
