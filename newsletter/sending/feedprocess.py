"""The send loop's feed in a process of its own, for large lists sent the template-once way.

Streaming and checking the list, looking its chunks up in the ledger and personalising each reader
costs 30-36 µs a reader: at real provider latency, half of what one process spends, and Python runs
one thread of a process at a time, so SendGrid and Mailgun kept the pipe about half full
(benchmarks/README.md, "fourth round"). Here that feed runs in a forked process, which only reads:
the list, and the ledger through a read-only connection of its own. Everything that writes stays in
the sending process: the claims and records, and the feed's own writes (skips, a reader whose data
fails), which the feed sends back. One writer, as before, so the exactly-once argument
(docs/architecture.md) is unchanged; killing the sender kills the feed (PR_SET_PDEATHSIG).

Used where it pays and is safe: Linux (fork and PR_SET_PDEATHSIG), the SQLite ledger (one run per
issue), a provider that sends the template once (its batches are small to hand over), no
``--limit``, and at least :data:`MIN_READERS` pending readers (a fork costs tens of ms). It is forked
before the run starts its worker threads and while the lease's heartbeat is held out of SQLite, so
the child inherits no lock that another thread held at that instant.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
from typing import TYPE_CHECKING, Any

from .. import errors
from ..errors import FeedFailed, NewsletterError, RecipientError

if TYPE_CHECKING:
    from .plan import SendRun
    from .pool import Dispatcher

MIN_READERS = 5000
_QUEUE_BATCHES = 16  # batches handed over ahead of the workers: the feed's lead, and its memory
_PR_SET_PDEATHSIG = 1


def wanted(run: SendRun) -> bool:
    """Whether this run's feed goes to a process of its own."""
    if not sys.platform.startswith("linux") or run.ledger.backend != "sqlite" or run.options.limit is not None:
        return False
    if not run.provider.substitutes:  # a body per reader: too much to hand over for what it saves
        return False
    return run.ledger.counts(run.issue_id).get("pending", 0) >= MIN_READERS


class FeedProcess:
    """The walk of one send in a forked process: :meth:`start` it before the run starts its worker threads,
    :meth:`hand_over` its batches to the dispatcher, :meth:`stop` it whatever happens."""

    def __init__(self, run: SendRun, holder: str) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self.run = run
        self.handed: Any = context.Queue(maxsize=_QUEUE_BATCHES)
        self.process = context.Process(target=_walk, args=(run, holder, self.handed, os.getpid()),
                                       name="newsletter-feed", daemon=True)

    @classmethod
    def start(cls, run: SendRun, holder: str) -> FeedProcess | None:
        """The feed's process, started; None where it is not wanted or no process can be had (the run then
        walks in its own thread). Forked while no thread of this process is inside SQLite: the only other
        thread by then is the lease's heartbeat, and it waits."""
        if not wanted(run):
            return None
        feed = cls(run, holder)
        try:
            with run.ledger.quiescent():
                feed.process.start()
        except OSError:  # a limit on processes, a sandbox
            feed.handed.close()
            return None
        return feed

    def hand_over(self, dispatcher: Dispatcher) -> bool:
        """Hand what the feed sends to the dispatcher, writing its skips and failures; True when it walked
        the whole list, False when the run stopped first."""
        run, handed, process = self.run, self.handed, self.process
        while True:
            try:
                kind, item = handed.get(timeout=0.5)
            except queue.Empty:
                if dispatcher.aborted:
                    return False
                if not process.is_alive():
                    raise FeedFailed(f"the process that reads and personalises the list ended with exit code "
                                     f"{process.exitcode} before it was done", hint="nothing of what it had not "
                                     f"handed over was sent; run `newsletter send {run.issue_id}` again") from None
                continue
            if kind == "work":
                if not dispatcher.submit(item):
                    return False
            elif kind == "skip":
                run.ledger.skip(run.issue_id, item)
            elif kind == "failed":
                email, message, hint = item
                dispatcher.recipient_failed(RecipientError(email, message, hint=hint))
            elif kind == "done":
                process.join(5)  # it has said all it had to
                return item
            else:  # "error"
                raise _rebuilt(item)

    def stop(self) -> None:
        """End the feed's process if it still runs (the run stopped first: aborted, interrupted, failed)."""
        if self.process.is_alive():
            self.process.kill()  # it holds nothing to clean up
        self.process.join(10)
        self.handed.close()


class _Handover:
    """What the walk needs of a dispatcher and of the ledger's writes, in the feed's process: each goes to
    the sending process."""

    aborted = False  # the sending process stops reading and ends this process instead

    def __init__(self, send) -> None:
        self._send = send

    def submit(self, work) -> bool:
        self._send(("work", work))
        return True

    def recipient_failed(self, err: RecipientError) -> None:
        self._send(("failed", (err.email, err.message, err.hint)))


class _Reader:
    """The ledger as the feed's process sees it: look-ups through a read-only connection of its own (a
    connection must not cross a fork), skips sent to the sending process, which writes them."""

    def __init__(self, ledger, send) -> None:
        self._ledger, self._send = ledger, send

    def lookup_rows(self, issue_id: str, emails):
        return self._ledger.lookup_rows(issue_id, emails)

    def reserve(self, issue_id: str, holder: str, rows):
        return None  # one run per issue: every pending row is this run's

    def skip(self, issue_id: str, reasons) -> int:
        if reasons:
            self._send(("skip", list(reasons)))
        return len(reasons)


def _walk(run: SendRun, holder: str, handed, sender: int) -> None:
    """The feed's process: walk the list as SendRun._feed does, handing everything over."""
    _die_with_the_sender(sender)
    # Ctrl-C and SIGTERM (cron, systemd) reach the whole process group: they are the sender's to handle,
    # which stops gently and then ends this process (SIGKILL: it holds nothing to clean up).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..ledger.sqlite import SQLiteLedger

    try:
        with SQLiteLedger(run.ledger.url, readonly=True) as ledger:
            run.ledger = _Reader(ledger, handed.put)
            complete = run._feed(_Handover(handed.put), holder)
        handed.put(("done", complete))
    except BaseException as err:  # noqa: BLE001 - told to the sending process, which raises it
        handed.put(("error", (type(err).__name__, getattr(err, "message", str(err)), getattr(err, "path", None),
                              getattr(err, "line", None), getattr(err, "hint", None))))
    finally:
        handed.close()
        handed.join_thread()


def _die_with_the_sender(sender: int) -> None:
    """Ask the kernel to kill this process when the sending one dies (a SIGKILL included); if it is
    already gone, go."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != sender:
        os._exit(1)


def _rebuilt(item: tuple) -> Exception:
    """The feed's error, raised again in the sending process (a NewsletterError keeps its class)."""
    name, message, path, line, hint = item
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, NewsletterError) and cls is not RecipientError:
        return cls(message, path=path, line=line, hint=hint)
    return FeedFailed(f"the process that reads and personalises the list failed: {name}: {message}",
                      hint="what it had handed over was sent and recorded; run `newsletter send` again, and "
                           "report this as a bug if it happens again")
