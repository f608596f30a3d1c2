"""The fleet stage's tables, kept in the daemon's state store (state.db) so that they
commit in the same SQLite transaction as the bans they go with.

    fleet_outbox   entries decided here and not yet in our stream (bounded, oldest dropped)
    fleet_cursors  per peer: the stream id and sequence number read and acted on
    fleet_contrib  per (network, publisher): the expiry that publisher asked for
    fleet_quarantine  per publisher: when its quarantine ends (a restart keeps it)
    fleet_meta     the last stream-id milliseconds handed out (never decreases)

Every method joins the caller's `store.batch()` when there is one, so a journal batch's
bans, their outbox entries and the journal cursor are one transaction, and so are a
peer's bans, the kernel's fleet rows and that peer's cursor.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from sshguardd.bans.fleet_veto import Contribution
from sshguardd.contracts import FleetEntry
from sshguardd.effects.store import Store

_SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS fleet_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
     "id TEXT NOT NULL, op TEXT NOT NULL, net TEXT NOT NULL, until REAL NOT NULL, "
     "kind TEXT NOT NULL, count REAL NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS fleet_cursors (peer TEXT PRIMARY KEY, id TEXT NOT NULL, "
     "seq INTEGER NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS fleet_contrib (network TEXT NOT NULL, publisher TEXT "
     "NOT NULL, until REAL NOT NULL, PRIMARY KEY (network, publisher)) WITHOUT ROWID"),
    "CREATE TABLE IF NOT EXISTS fleet_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS fleet_quarantine (publisher TEXT PRIMARY KEY, "
     "until REAL NOT NULL)"),
)

Staged = tuple[str, FleetEntry]


class FleetStore:
    """The fleet tables inside `store`; host names this host's entries."""

    def __init__(self, store: Store, host: str, outbox_max: int = 100_000) -> None:
        self.store = store
        self.host = host
        self.outbox_max = outbox_max
        self.dropped = 0  # outbox entries dropped because the outbox was full
        with store.batch():
            for stmt in _SCHEMA:
                self._db.execute(stmt)

    @property
    def _db(self) -> sqlite3.Connection:
        return self.store.connection

    # -- outbox --------------------------------------------------------------------------
    def stage(self, items: Iterable[tuple[str, str, float, str, float]],
              now: float) -> list[Staged]:
        """Queue (op, network, until, kind, count) entries for our stream; returns them
        with their stream ids. Call inside the transaction that records the bans."""
        rows = list(items)
        if not rows:
            return []
        out: list[Staged] = []
        with self.store.batch():
            last = self._db.execute(
                "SELECT value FROM fleet_meta WHERE key = 'last_ms'").fetchone()
            ms = max(int(now * 1000), int(last[0]) if last else 0)
            for op, net, until, kind, count in rows:
                cur = self._db.execute(
                    "INSERT INTO fleet_outbox (id, op, net, until, kind, count) "
                    "VALUES ('', ?, ?, ?, ?, ?)", (op, net, until, kind, count))
                seq = int(cur.lastrowid or 0)
                entry_id = f"{ms}-{seq}"
                self._db.execute("UPDATE fleet_outbox SET id = ? WHERE seq = ?",
                                 (entry_id, seq))
                out.append((entry_id, FleetEntry(op, net, until, kind, count, self.host,
                                                 seq)))
            self._db.execute("INSERT OR REPLACE INTO fleet_meta VALUES ('last_ms', ?)",
                             (str(ms),))
            depth = self.outbox_depth()
            if depth > self.outbox_max:
                # Oldest first: the snapshot still carries their effect to every peer,
                # which sees the gap in our sequence and resyncs.
                excess = depth - self.outbox_max
                self._db.execute("DELETE FROM fleet_outbox WHERE seq IN (SELECT seq FROM "
                                 "fleet_outbox ORDER BY seq LIMIT ?)", (excess,))
                self.dropped += excess
                out = out[max(0, excess - (depth - len(out))):]
        return out

    def pending(self) -> list[Staged]:
        rows = self._db.execute("SELECT seq, id, op, net, until, kind, count FROM "
                                "fleet_outbox ORDER BY seq").fetchall()
        return [(i, FleetEntry(op, n, u, k, c, self.host, s)) for s, i, op, n, u, k, c
                in rows]

    def published(self, seq: int) -> None:
        with self.store.batch():
            self._db.execute("DELETE FROM fleet_outbox WHERE seq <= ?", (seq,))

    def outbox_depth(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM fleet_outbox").fetchone()[0])

    def last_staged(self) -> tuple[str, int]:
        """(stream id, seq) of the latest entry ever staged; ("0-0", 0) before the first."""
        row = self._db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'fleet_outbox'").fetchone()
        seq = int(row[0]) if row else 0
        last = self._db.execute(
            "SELECT value FROM fleet_meta WHERE key = 'last_ms'").fetchone()
        return (f"{int(last[0]) if last else 0}-{seq}", seq)

    def ban_rows(self, networks: Iterable[str]) -> dict[str, tuple[float, str]]:
        """network -> (until, reason) of the bans table's rows among networks."""
        nets = list(networks)
        out: dict[str, tuple[float, str]] = {}
        for i in range(0, len(nets), 500):  # SQLite's bound-parameter limit
            chunk = nets[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for n, u, r in self._db.execute(
                    f"SELECT network, until, reason FROM bans WHERE network IN ({marks})",  # noqa: S608  (only ? marks)
                    chunk):
                out[n] = (float(u), str(r))
        return out

    # -- cursors and contributions -------------------------------------------------------
    def cursors(self) -> dict[str, tuple[str, int]]:
        return {p: (i, s) for p, i, s in
                self._db.execute("SELECT peer, id, seq FROM fleet_cursors")}

    def save_cursor(self, peer: str, entry_id: str, seq: int) -> None:
        with self.store.batch():
            self._db.execute("INSERT OR REPLACE INTO fleet_cursors VALUES (?, ?, ?)",
                             (peer, entry_id, seq))

    def contributions(self) -> list[tuple[str, str, float]]:
        return [(n, p, u) for n, p, u in self._db.execute(
            "SELECT network, publisher, until FROM fleet_contrib")]

    def write_contributions(self, rows: Sequence[Contribution]) -> None:
        if not rows:
            return
        with self.store.batch():
            # In order: a row set and then deleted within one batch must end deleted.
            i = 0
            while i < len(rows):
                j = i
                gone = rows[i].until is None
                while j < len(rows) and (rows[j].until is None) == gone:
                    j += 1
                if gone:
                    self._db.executemany(
                        "DELETE FROM fleet_contrib WHERE network = ? AND publisher = ?",
                        [(c.network, c.publisher) for c in rows[i:j]])
                else:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO fleet_contrib VALUES (?, ?, ?)",
                        [(c.network, c.publisher, c.until) for c in rows[i:j]])
                i = j

    # -- quarantines ---------------------------------------------------------------------
    def quarantines(self, now: float) -> dict[str, float]:
        """publisher -> end of its quarantine, for those still quarantined at now."""
        return {p: float(u) for p, u in self._db.execute(
            "SELECT publisher, until FROM fleet_quarantine WHERE until > ?", (now,))}

    def save_quarantines(self, rows: dict[str, float], now: float) -> None:
        """Record these quarantines (publisher -> end) and forget the ended ones."""
        with self.store.batch():
            self._db.executemany("INSERT OR REPLACE INTO fleet_quarantine VALUES (?, ?)",
                                 list(rows.items()))
            self._db.execute("DELETE FROM fleet_quarantine WHERE until <= ?", (now,))
