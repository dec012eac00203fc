"""What ``newsletter dispatch`` does with each issue, decided from the issue files, the ledger and the time
(docs/sending.md, "Cron").

:func:`decide` is the rule, a pure function of one issue's facts and ``now``; :func:`read_schedule`
gathers those facts (issue files, plans, leases) and applies it; :func:`first_notices` keeps the
"said once" promise for issues too old to send unasked, in the ledger.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from ..compile.issue import load_issue
from ..config import Settings
from ..errors import ConfigError, IssueError
from ..ledger import open_ledger
from ..ledger.base import Lease
from .binding import OUTBOX
from .lease import LEASE_STALE_AFTER

# A machine that was off over a long weekend still sends Monday's late digest; one that was off for a
# week does not mail last week's unasked. Daily letters want less (--max-age 12h).
DEFAULT_MAX_AGE = "3d"

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)([wdhms])")


class Action(Enum):
    SEND = "send"  # send_at has passed, within max-age, never started
    RESUME = "resume"  # a plan was started and is not finished: finished whatever its age
    BUSY = "busy"  # would be sent or resumed, but another live run holds the issue
    TOO_OLD = "too-old"  # send_at is older than max-age and it was never started: left alone
    WAITING = "waiting"  # send_at is still to come
    FINISHED = "finished"  # its plan has nobody pending
    UNSCHEDULED = "unscheduled"  # no send_at: sent by hand only


@dataclass(frozen=True)
class IssueFacts:
    """What dispatch knows of one issue."""

    issue_id: str
    ref: str  # what `send` is given: the file's path, or the id of a plan whose file is gone
    send_at: datetime | None = None
    started: bool = False  # a plan is frozen in the ledger
    unfinished: bool = False  # rows of it are pending or sending
    # Its plan went only through the outbox (a trial) and [provider] name is now another: nobody got it yet.
    trial_only: bool = False
    held_by: Lease | None = None  # a live run holding the issue's lease
    cancelled: bool = False  # `newsletter cancel` stopped it for good
    file_gone: bool = False  # a plan in the ledger that no issue file is (renamed or deleted)
    in_doubt: int = 0  # rows `unknown`: a finished plan may still want `reconcile`


@dataclass(frozen=True)
class Verdict:
    facts: IssueFacts
    action: Action
    age: timedelta | None = None  # now - send_at, when send_at has passed


@dataclass
class Schedule:
    verdicts: list[Verdict] = field(default_factory=list)
    broken: list[IssueError] = field(default_factory=list)  # files that cannot be read: due or not, unknown

    def having(self, *actions: Action) -> list[Verdict]:
        return [v for v in self.verdicts if v.action in actions]


def parse_duration(text: str) -> timedelta:
    """``3d``, ``12h``, ``90m``, ``1w``, ``1d12h``, ``45s`` -> a timedelta; anything else is a ConfigError."""
    spec = text.strip().lower()
    if not spec or _DURATION.sub("", spec) or not _DURATION.search(spec):
        raise ConfigError(f"{text!r} is not a duration",
                          hint="write a number and a unit: 3d, 12h, 90m, 1w, or combined like 1d12h")
    return timedelta(seconds=sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(spec)))


def decide(facts: IssueFacts, now: datetime, max_age: timedelta) -> Verdict:
    """The rule. A started plan is finished whatever its age (that is what its first run promised); an
    issue never started is sent only while its send_at lies between ``now - max_age`` and ``now``. A plan
    finished only through the outbox, a trial, is judged as never started: when it is due, its send is
    refused with the way out (`send --restart`, sending/binding.py) rather than called finished in silence."""
    age = now - facts.send_at if facts.send_at is not None and facts.send_at <= now else None
    if facts.cancelled:
        action = Action.FINISHED
    elif facts.unfinished:
        action = Action.RESUME
    elif facts.started and not facts.trial_only:
        action = Action.FINISHED
    elif facts.send_at is None:
        action = Action.UNSCHEDULED
    elif age is None:
        action = Action.WAITING
    elif age > max_age:
        action = Action.TOO_OLD
    else:
        action = Action.SEND
    if action in (Action.SEND, Action.RESUME) and facts.held_by is not None:
        action = Action.BUSY
    return Verdict(facts, action, age)


def read_schedule(settings: Settings, now: datetime, max_age: timedelta) -> Schedule:
    """Every issue file in ``issues/`` and every plan in the ledger, with what dispatch does with it now."""
    schedule = Schedule()
    seen: set[str] = set()
    trial_is_over = settings.provider.name != OUTBOX  # an outbox plan is a trial once the provider is another
    with open_ledger(settings, readonly=True) as ledger:
        def facts(issue_id: str, ref: str, send_at: datetime | None, *, file_gone: bool = False) -> IssueFacts:
            counts = ledger.counts(issue_id)
            lease = ledger.lease(issue_id)
            alive = lease is not None and lease.holder_alive(stale_after=LEASE_STALE_AFTER, now=time.time())
            record = ledger.issue(issue_id)
            return IssueFacts(issue_id, ref, send_at, started=record is not None,
                              unfinished=bool(counts["pending"] or counts["sending"]),
                              trial_only=record is not None and record.provider == OUTBOX and trial_is_over,
                              held_by=lease if alive else None,
                              cancelled=record is not None and bool(record.cancelled_at), file_gone=file_gone,
                              in_doubt=counts["unknown"])

        for path in sorted(settings.workspace_path("issues").glob("*.md")):
            try:
                issue = load_issue(path)
            except IssueError as err:
                schedule.broken.append(err)  # cron must not stop at one, nor skip it in silence
                continue
            seen.add(issue.id)
            schedule.verdicts.append(decide(facts(issue.id, str(path), issue.send_at), now, max_age))
        for record in ledger.issues():
            if record.issue_id not in seen:  # its file is gone or renamed: a started plan still finishes
                schedule.verdicts.append(decide(facts(record.issue_id, record.issue_id, None, file_gone=True), now,
                                                max_age))
    return schedule


def too_old_notice(verdict: Verdict) -> str:
    """The key under which "too old, left alone" is recorded: a new send_at is a new notice."""
    return f"too-old:{verdict.facts.send_at.isoformat()}"


def first_notices(settings: Settings, verdicts: list[Verdict]) -> list[Verdict]:
    """Of the too-old ``verdicts``, those never reported before; records them as reported now. Two
    dispatches at once: one of them gets each (the insert is the test)."""
    if not verdicts:
        return []
    with open_ledger(settings) as ledger:
        return [v for v in verdicts if ledger.mark_noticed(v.facts.issue_id, too_old_notice(v))]
