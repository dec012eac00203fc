"""Reusable end-to-end helpers: run ``newsletter send`` as a real process, SIGKILL it, resume it.

Used by ``tests/test_send_e2e.py`` with the outbox; the provider tests run the
same pattern against their fake HTTP providers by passing another ``env``::

    eligible = write_list(workspace / "subscribers" / "subscribers.csv", 300)
    history = kill_and_resume(workspace, env, rng=random.Random(seed))
    assert history[-1].returncode == 0
    assert delivered == Counter(eligible)   # however the provider counts deliveries
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ISSUE = "2026-11-30-weekly"
_CLI = "from newsletter.cli import main; main()"


@dataclass(frozen=True)
class Run:
    returncode: int | None  # None: killed with SIGKILL
    stdout: str
    stderr: str
    killed_after: float | None = None


def write_list(path: Path, count: int, *, seed: int = 0) -> list[str]:
    """A list of ``count`` subscribers (some unsubscribed, some without a name); returns the eligible addresses."""
    rng = random.Random(seed)
    eligible = []
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "status", "tags", "city"])
        for n in range(count):
            email = f"reader{n:04d}@example.com"
            status = "unsubscribed" if n % 10 == 7 else "subscribed"
            name = "" if n % 5 == 0 else f"Reader {n}"
            writer.writerow([email, name, status, "weekly", rng.choice(["London", "Lyon", "", "Oslo"])])
            if status == "subscribed":
                eligible.append(email)
    return eligible


def send_env(**overrides: str) -> dict[str, str]:
    """The current environment without NEWSLETTER_* leftovers, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(overrides)
    return env


def start_send(workspace: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CLI, "send", ISSUE, "--yes", *args], cwd=workspace, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_send(workspace: Path, env: dict[str, str], *args: str, timeout: float = 120) -> Run:
    process = start_send(workspace, env, *args)
    out, err = process.communicate(timeout=timeout)
    return Run(process.returncode, out, err)


def kill_and_resume(workspace: Path, env: dict[str, str], *, rng: random.Random, kills: int = 4,
                    window: tuple[float, float] = (0.4, 2.5), resume_codes: tuple[int, ...] = (4,),
                    max_resumes: int = 10) -> list[Run]:
    """SIGKILL ``kills`` runs at random moments in ``window`` seconds, then resume until the exit code is final.

    Returns every run; the last one's ``returncode`` is not in ``resume_codes``.
    """
    history = []
    for _ in range(kills):
        process = start_send(workspace, env)
        delay = rng.uniform(*window)
        try:
            out, err = process.communicate(timeout=delay)
            history.append(Run(process.returncode, out, err))  # finished before the kill: fine, keep going
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            out, err = process.communicate()
            history.append(Run(None, out, err, killed_after=delay))
    for _ in range(max_resumes):
        run = run_send(workspace, env)
        history.append(run)
        if run.returncode not in resume_codes:
            return history
        time.sleep(0.05)
    raise AssertionError(f"still incomplete after {max_resumes} resumes: {history[-1].stderr[-2000:]}")


def outbox_deliveries(workspace: Path, issue: str = ISSUE) -> Counter:
    """address -> number of .eml files the outbox wrote for it (half-written temp files are not deliveries)."""
    folder = workspace / "outbox" / issue
    return Counter(p.name.rsplit("--", 1)[0] for p in folder.glob("*.eml") if not p.name.startswith("."))
