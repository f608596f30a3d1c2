"""The state store: SQLite in WAL mode under state_dir (default /var/lib/sshguardd/state.db).

Holds the active bans with their expiry, the history of bans per network (for escalation),
successful logins (for admin protection across restarts) and the log position. Every
write is a committed transaction with synchronous=FULL, so neither `kill -9` nor a power
cut loses a ban or cursor position once the call (or the enclosing `batch()`) returned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from sshguardd.contracts import Ban

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("/var/lib/sshguardd/state.db")

# No secondary indexes: every query but the primary-key lookups reads (nearly) the whole
# table anyway (active bans at start-up, 30 days of history, an occasional prune), and
# each index would cost a B-tree insert per ban (adding 100k bans took 1.1-1.7 s with
# them, 0.34 s without, measured here).
# bans is clustered on its key (WITHOUT ROWID): one B-tree instead of table + index.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    network  TEXT PRIMARY KEY,
    since    REAL NOT NULL,
    until    REAL NOT NULL,
    duration REAL NOT NULL,
    strikes  INTEGER NOT NULL,
    reason   TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    network TEXT NOT NULL,
    time    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS logins (
    network TEXT PRIMARY KEY,
    time    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_users (
    network TEXT NOT NULL,
    user    TEXT NOT NULL,
    time    REAL NOT NULL,
    PRIMARY KEY (network, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offenders (
    key    TEXT PRIMARY KEY,
    latest REAL NOT NULL,
    conns  BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

SCHEMA_VERSION = "1"

_SAMPLE = {
    "ipv4": "SELECT network FROM bans WHERE until > ? AND instr(network, ':') = 0 "
            "LIMIT ? OFFSET ?",
    "ipv6": "SELECT network FROM bans WHERE until > ? AND instr(network, ':') > 0 "
            "LIMIT ? OFFSET ?",
}


class StoreError(Exception):
    """The state store cannot be opened or is not a database we can use."""


class Store:
    """One SQLite database. Not thread-safe: the daemon loop is its only user.

    Each method commits on its own unless called inside `with store.batch():`, which makes
    everything in the block one transaction (e.g. the bans of a journal batch together
    with the cursor after it, so a crash can neither lose those bans nor count the
    entries twice).
    """

    def __init__(self, path: Path | str = DEFAULT_PATH):
        self.path = Path(path)
        self._depth = 0
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Bans and the cursor are nobody else's business: create the file 0600.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the state store {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self.batch():
                for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    self._db.execute(stmt)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)",
                                 (SCHEMA_VERSION,))
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"the state store {self.path} is not usable ({exc}); move it "
                             "aside to start with no bans and no history") from exc

    # -- transactions ------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[Store]:
        """One transaction for everything inside; nested batches join the outer one. On an
        exception nothing of the block is written."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
            self._db.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself failed (disk full): SQLite leaves the transaction open.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    def close(self) -> None:
        self._db.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The database, for stages that keep tables of their own in it (the fleet
        stage's outbox and cursors) and must commit them inside `batch()`."""
        return self._db

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bans --------------------------------------------------------------------------
    def add_bans(self, bans: Iterable[Ban], *, history: bool = True) -> None:
        """Record bans (replacing an older ban of the same network) and add each to the
        network's history at its start time (until - duration); history=False for bans
        that must not escalate later ones (sshd's penalties carried over a restart)."""
        rows = [(b.network, b.until - b.duration, b.until, b.duration, b.strikes, b.reason)
                for b in bans]
        if not rows:
            return
        with self.batch():
            self._db.executemany("INSERT OR REPLACE INTO bans VALUES (?, ?, ?, ?, ?, ?)", rows)
            if history:
                self._db.executemany("INSERT INTO history VALUES (?, ?)",
                                     [(r[0], r[1]) for r in rows])

    def remove_ban(self, network: str) -> bool:
        """Forget an active ban (unban); its history stays. True if there was one."""
        with self.batch():
            cur = self._db.execute("DELETE FROM bans WHERE network = ?", (network,))
        return cur.rowcount > 0

    def shift_bans(self, delta: float) -> None:
        """Move every ban's start and end by `delta` seconds (the wall clock stepped;
        the kernel's relative timeouts did not)."""
        with self.batch():
            self._db.execute("UPDATE bans SET since = since + ?, until = until + ?",
                             (delta, delta))

    def active_bans(self, now: float) -> list[Ban]:
        """Bans that have not expired at `now`, soonest expiry first."""
        rows = self._db.execute(
            "SELECT network, duration, until, strikes, reason FROM bans WHERE until > ?",
            (now,)).fetchall()
        rows.sort(key=lambda r: r[2])
        return [Ban(n, d, u, s, r) for n, d, u, s, r in rows]

    def active_among(self, networks: Iterable[str], now: float) -> set[str]:
        """Which of `networks` hold a ban that has not expired at `now` (primary-key
        lookups: a batch's decided bans, never the whole table)."""
        out: set[str] = set()
        for network in set(networks):
            row = self._db.execute("SELECT 1 FROM bans WHERE network = ? AND until > ?",
                                   (network, now)).fetchone()
            if row:
                out.add(network)
        return out

    def count_active(self, now: float) -> dict[str, int]:
        """Active bans by family ({'ipv4': n, 'ipv6': m}), counted by SQLite itself: no
        row reaches Python (re-reading 300k bans as objects took over a second)."""
        total, v6 = self._db.execute(
            "SELECT count(*), coalesce(sum(instr(network, ':') > 0), 0) FROM bans "
            "WHERE until > ?", (now,)).fetchone()
        return {"ipv4": total - v6, "ipv6": v6}

    def sample_active(self, now: float, per_kind: int = 2) -> list[str]:
        """A few networks under a ban that lasts at least another minute, for the periodic
        firewall check: up to `per_kind` each of IPv4 and IPv6 networks, taken from a
        random offset so that, over the checks, every part of the sets is looked at.
        SQLite skips rows in C; nothing but the sample reaches Python."""
        out: list[str] = []
        counts = self.count_active(now + 60)
        for family, query in _SAMPLE.items():
            n = counts[family]
            if n:
                offset = secrets.randbelow(max(1, n - per_kind + 1))
                out += [r[0] for r in self._db.execute(query, (now + 60, per_kind, offset))]
        return out

    def history(self, since: float, limit: int | None = None) -> dict[str, list[float]]:
        """network -> start times of its bans at or after `since`, oldest first; with
        `limit`, only the `limit` most recent entries are read (the policy keeps a
        bounded history, so a million rows need not become Python objects)."""
        out: dict[str, list[float]] = {}
        if limit is None:
            rows = self._db.execute(
                "SELECT network, time FROM history WHERE time >= ? ORDER BY time", (since,))
        else:
            rows = reversed(self._db.execute(
                "SELECT network, time FROM history WHERE time >= ? ORDER BY time DESC "
                "LIMIT ?", (since, limit)).fetchall())
        for network, time in rows:
            out.setdefault(network, []).append(time)
        return out

    # -- logins (admin protection) -------------------------------------------------------
    def record_logins(self, logins: Iterable[tuple[str, float] | tuple[str, float, str | None]]
                      ) -> None:
        """Remember (network, time[, account]) of successful logins; the latest time per
        network (and per account, which admin protection covers) wins."""
        rows = list(logins)
        if rows:
            with self.batch():
                self._db.executemany(
                    "INSERT INTO logins VALUES (?, ?) ON CONFLICT(network) DO UPDATE "
                    "SET time = max(time, excluded.time)", [r[:2] for r in rows])
                self._db.executemany(
                    "INSERT INTO login_users VALUES (?, ?, ?) ON CONFLICT(network, user) "
                    "DO UPDATE SET time = max(time, excluded.time)",
                    [(r[0], r[2], r[1]) for r in rows if len(r) > 2 and r[2] is not None])

    def login_users(self, since: float) -> dict[str, list[str]]:
        """network -> the accounts that logged in from it at or after `since`, oldest
        first."""
        out: dict[str, list[str]] = {}
        for network, user in self._db.execute(
                "SELECT network, user FROM login_users WHERE time >= ? ORDER BY time",
                (since,)):
            out.setdefault(network, []).append(user)
        return out

    def logins(self, since: float) -> dict[str, float]:
        return dict(self._db.execute("SELECT network, time FROM logins WHERE time >= ?", (since,)))

    # -- failure counters -------------------------------------------------------------
    # The policy's offenders (BanPolicy.take_changes), written with the position of the
    # batch that changed them, in the same transaction: a restart resumes the counters
    # exactly where the position says, whatever the journal still holds.
    def save_offenders(self, changes: Iterable[tuple[str, float, bytes | None]]) -> None:
        gone, kept = [], []
        for key, latest, packed in changes:
            if packed is None:
                gone.append((key,))
            else:
                kept.append((key, latest, packed))
        with self.batch():
            if gone:
                self._db.executemany("DELETE FROM offenders WHERE key = ?", gone)
            if kept:
                self._db.executemany("INSERT OR REPLACE INTO offenders VALUES (?, ?, ?)", kept)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('offenders', '1')")

    def offenders(self, since: float) -> list[tuple[str, bytes]] | None:
        """Saved counters whose latest line is at or after `since`, oldest first; None
        when this store has never saved any (written by an earlier version)."""
        if self._db.execute("SELECT 1 FROM meta WHERE key = 'offenders'").fetchone() is None:
            return None
        return [(k, bytes(c)) for k, c in self._db.execute(
            "SELECT key, conns FROM offenders WHERE latest >= ? ORDER BY latest", (since,))]

    # -- log position ------------------------------------------------------------------
    # A LogBatch.position: a journal cursor or a log file's "PATH:INODE:OFFSET". Kept under
    # the meta key 'cursor', its name in state stores written by earlier versions.
    def position(self) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        return row[0] if row else None

    def save_position(self, position: str) -> None:
        with self.batch():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (position,))

    # -- housekeeping ------------------------------------------------------------------
    def prune(self, now: float, history_since: float, logins_since: float,
              offenders_since: float | None = None) -> None:
        """Drop expired bans, history before `history_since`, logins before `logins_since`
        and failure counters whose latest line is before `offenders_since`."""
        with self.batch():
            if offenders_since is not None:
                self._db.execute("DELETE FROM offenders WHERE latest < ?", (offenders_since,))
            self._db.execute("DELETE FROM bans WHERE until <= ?", (now,))
            self._db.execute("DELETE FROM history WHERE time < ?", (history_since,))
            self._db.execute("DELETE FROM logins WHERE time < ?", (logins_since,))
            self._db.execute("DELETE FROM login_users WHERE time < ?", (logins_since,))

