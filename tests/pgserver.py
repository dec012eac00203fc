"""A throwaway PostgreSQL cluster for the tests: ``initdb`` + ``pg_ctl`` in a temp folder, on a Unix socket there.

As root the cluster runs as the ``postgres`` user (PostgreSQL refuses to run as root) through ``runuser``.
Where no server can be started, :func:`unavailable` says why: the tests that need one skip with that
reason, or fail when ``NEWSLETTER_REQUIRE_POSTGRES=1`` (``.ci/run`` sets it, so CI never skips them).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REQUIRE_ENV = "NEWSLETTER_REQUIRE_POSTGRES"
_PORT = 5432  # only names the socket file (.s.PGSQL.5432) in our own folder: no TCP listener
_names = itertools.count(1)
# Read once at import: the autouse ``clean_env`` fixture clears NEWSLETTER_* variables for each test.
REQUIRED = os.environ.get(REQUIRE_ENV) == "1"


def _find(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), reverse=True)
    return str(versions[0]) if versions else None


def _as_owner(owner: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


class Cluster:
    """A running cluster: ``url(dbname)`` for a fresh database, ``stop()`` at the end of the session."""

    def __init__(self, root: Path, owner: str | None):
        self.root, self.owner = root, owner
        self.data, self.socket_dir = root / "data", root / "sock"
        self.user = owner or pwd.getpwuid(os.getuid()).pw_name

    def _run(self, *argv: str) -> None:
        subprocess.run(_as_owner(self.owner, list(argv)), check=True, capture_output=True, text=True, timeout=120)

    def start(self, extra_options: str = "") -> None:
        self._run(_find("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8",
                  "--no-locale", "--no-sync")
        options = (f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -p {_PORT} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=100 " + extra_options)
        self._run(_find("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        subprocess.run(_as_owner(self.owner, [_find("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                                              "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.socket_dir}&port={_PORT}"

    def new_database(self) -> str:
        """A fresh empty database of its own (one per test): its URL."""
        name = f"t{os.getpid()}_{next(_names)}"
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def cluster_or_exit(extra_options: str = "") -> Cluster:
    """For a benchmark: a started cluster (``extra_options``: more ``-c name=value`` settings for the
    server), or exit saying why none could be started."""
    cluster, reason = start_cluster(extra_options)
    if cluster is None:
        raise SystemExit(f"no PostgreSQL server: {reason}")
    return cluster


def start_cluster(extra_options: str = "") -> tuple[Cluster | None, str]:
    """A started cluster, or None and the reason none could be started."""
    for tool in ("initdb", "pg_ctl"):
        if not _find(tool):
            return None, f"PostgreSQL's {tool} is not installed (Debian: apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg is not installed (pip install -e '.[test]')"
    owner = None
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' user to run the server as"
        owner = "postgres"
    root = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
    os.chmod(root, 0o755)
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    cluster = Cluster(root, owner)
    try:
        (root / "sock").mkdir() if not owner else subprocess.run(
            _as_owner(owner, ["mkdir", str(root / "sock")]), check=True)
        cluster.start(extra_options)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or ""
        log = root / "server.log"
        if log.exists():
            detail += log.read_text(errors="replace")[-2000:]
        cluster.stop()
        return None, f"could not start a PostgreSQL server: {err} {detail}".strip()
    return cluster, ""


def unavailable(reason: str) -> None:
    """Skip with the reason, or fail where a server is required (CI)."""
    if REQUIRED:
        pytest.fail(f"{REQUIRE_ENV}=1 but no PostgreSQL server: {reason}", pytrace=False)
    pytest.skip(reason)
