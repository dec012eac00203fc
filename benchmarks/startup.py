"""How long the commands users type most take to start and finish, beside a bare interpreter.

    python benchmarks/startup.py            # 15 runs each, medians
    python benchmarks/startup.py --runs 30

Each command runs as a fresh process in a copy of the example workspace (the
example issue already sent through the outbox, so `status ISSUE` has rows to
count). Medians, because other load on the machine only ever adds time; "CPU ms"
(user + system of the child) is less sensitive to that load than wall time.

Targets (issue 16): `newsletter --help` and `newsletter status --help` <= 150 ms,
`newsletter status ISSUE` <= 250 ms, `newsletter build` of the example issue <= 400 ms.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ISSUE = "2026-11-30-weekly"
CLI = [str(Path(sys.executable).parent / "newsletter")]  # the installed entry point, as users run it
CASES = [
    ("python -c pass", [sys.executable, "-c", "pass"], None),
    ("newsletter --help", [*CLI, "--help"], 150),
    ("newsletter status --help", [*CLI, "status", "--help"], 150),
    ("newsletter status ISSUE", [*CLI, "status", ISSUE], 250),
    ("newsletter build ISSUE", [*CLI, "build", ISSUE, "--out", "out"], 400),
]


def workspace(folder: Path) -> Path:
    for name in ("templates", "subscribers", "issues"):
        shutil.copytree(ROOT / name, folder / name)
    shutil.copy(ROOT / "newsletter.toml", folder / "newsletter.toml")
    subprocess.run([*CLI, "send", ISSUE, "--yes"], cwd=folder, check=True, capture_output=True,
                   env={**os.environ, "NEWSLETTER_SECRET": "bench"})
    return folder


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU milliseconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def verdict(wall: float, cpu: float, target: int | None) -> str:
    """The wall median against the target; "load" when only the wall is over and the CPU time is within it
    (the machine was busy: waiting for a core is not the command's own time)."""
    if target is None:
        return ""
    if wall <= target:
        return f"{target:>5} ok"
    return f"{target:>5} {'load' if cpu <= target else 'OVER'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = workspace(Path(tmp))
        print(f"{'command':28} {'median ms':>10} {'CPU ms':>8} {'target':>8}  {'x python':>8}")
        base = None
        for label, argv, target in CASES:
            timed(argv, folder)  # warm the file cache
            runs = [timed(argv, folder) for _ in range(args.runs)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            base = base or wall
            print(f"{label:28} {wall:10.0f} {cpu:8.0f} {verdict(wall, cpu, target):>8}  {wall / base:8.1f}")


if __name__ == "__main__":
    main()
