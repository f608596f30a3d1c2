"""The SQLite state store: real files in a temp dir, and a real writer killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sshguardd.contracts import Ban
from sshguardd.effects.store import Store, StoreError

T0 = 1_700_000_000.0


def ban(network: str, start: float = T0, duration: float = 600, strikes: int = 1) -> Ban:
    return Ban(network=network, duration=duration, until=start + duration, strikes=strikes,
               reason="5 failed attempts")


def test_bans_history_position_round_trip_across_reopen(tmp_path: Path):
    path = tmp_path / "state" / "state.db"
    with Store(path) as store:
        assert store.position() is None and store.active_bans(T0) == []
        store.add_bans([ban("192.0.2.1/32"), ban("2001:db8::/64", duration=3600, strikes=2)])
        store.save_position("s=abc;i=1")
        store.save_position("s=abc;i=2")
    with Store(path) as store:
        assert store.position() == "s=abc;i=2"
        active = store.active_bans(T0 + 1)
        assert [b.network for b in active] == ["192.0.2.1/32", "2001:db8::/64"]  # soonest first
        assert active[1] == ban("2001:db8::/64", duration=3600, strikes=2)
        assert [b.network for b in store.active_bans(T0 + 601)] == ["2001:db8::/64"]
        assert store.history(T0 - 1) == {"192.0.2.1/32": [T0], "2001:db8::/64": [T0]}
        assert store.active_among(["192.0.2.1/32", "192.0.2.9/32"], T0 + 1) == {"192.0.2.1/32"}
        assert store.active_among(["192.0.2.1/32"], T0 + 601) == set()
        assert store.count_active(T0 + 1) == {"ipv4": 1, "ipv6": 1}
        assert store.count_active(T0 + 601) == {"ipv4": 0, "ipv6": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_new_ban_replaces_the_old_one_and_history_accumulates(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        store.add_bans([ban("192.0.2.1/32")])
        store.add_bans([ban("192.0.2.1/32", start=T0 + 700, duration=1200, strikes=2)])
        assert store.active_bans(T0 + 701) == [ban("192.0.2.1/32", T0 + 700, 1200, 2)]
        assert store.history(0) == {"192.0.2.1/32": [T0, T0 + 700]}
        assert store.history(T0 + 1) == {"192.0.2.1/32": [T0 + 700]}


def test_remove_prune_and_logins(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        store.add_bans([ban("192.0.2.1/32"), ban("192.0.2.2/32", duration=60)])
        assert store.remove_ban("192.0.2.1/32") is True
        assert store.remove_ban("192.0.2.1/32") is False
        assert store.history(0) == {"192.0.2.1/32": [T0], "192.0.2.2/32": [T0]}  # kept
        store.record_logins([("198.51.100.1/32", T0), ("198.51.100.1/32", T0 - 50),
                             ("198.51.100.2/32", T0 - 5000)])
        assert store.logins(T0 - 100) == {"198.51.100.1/32": T0}
        store.prune(T0 + 100, history_since=T0 + 1, logins_since=T0 - 1000)
        assert store.active_bans(0) == []  # 192.0.2.2 expired at T0+60 and was pruned
        assert store.history(0) == {}
        assert store.logins(0) == {"198.51.100.1/32": T0}


def test_batch_is_one_transaction_and_rolls_back_on_error(tmp_path: Path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        with pytest.raises(RuntimeError), store.batch():
            store.add_bans([ban("192.0.2.1/32")])
            store.save_position("lost")
            raise RuntimeError("crash inside the batch")
        assert store.active_bans(T0) == [] and store.position() is None
        with store.batch():
            store.add_bans([ban("192.0.2.2/32")])
            with store.batch():  # nested joins the outer transaction
                store.save_position("kept")
            # another connection sees nothing until the outer batch commits
            other = sqlite3.connect(path)
            assert other.execute("SELECT count(*) FROM bans").fetchone()[0] == 0
            other.close()
        assert store.position() == "kept"
        assert [b.network for b in store.active_bans(T0)] == ["192.0.2.2/32"]


def test_a_damaged_file_gives_a_clear_error_and_is_left_alone(tmp_path: Path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"state\.db is not usable.*move it aside"):
        Store(path)
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_a_failing_statement_rolls_back_the_whole_batch(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        store.add_bans([ban("192.0.2.1/32")])
        with pytest.raises(sqlite3.IntegrityError), store.batch():
            store.save_position("c1")
            store._db.execute("INSERT INTO bans VALUES ('192.0.2.1/32', 0, 0, 0, 1, 'x')")
        assert store.position() is None and not store._db.in_transaction
        store.save_position("c2")
        assert store.position() == "c2"


WRITER = textwrap.dedent("""
    import sys
    from sshguardd.contracts import Ban
    from sshguardd.effects.store import Store, StoreError
    store = Store(sys.argv[1])
    i = 0
    while True:
        with store.batch():
            store.add_bans([Ban(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32", 600,
                                1e10, 1, "r")])
            store.save_position(f"cursor-{i}")
        sys.stdout.write(f"{i}\\n")  # only after COMMIT returned
        sys.stdout.flush()
        i += 1
""")


@pytest.mark.parametrize("commits", [1, 37, 400])
def test_kill_9_loses_nothing_committed(tmp_path: Path, commits: int):
    path = tmp_path / "state.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    last = -1
    try:
        for line in proc.stdout:
            last = int(line)
            if last + 1 >= commits:
                break
        # SIGKILL in the middle of further transactions: no chance to clean up
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert last + 1 == commits
    with Store(path) as store:
        cursor = store.position()
        assert cursor is not None
        n = int(cursor.removeprefix("cursor-"))
        assert n >= last  # the acknowledged commit, or one that committed after it
        networks = {b.network for b in store.active_bans(T0)}
        # every ban up to the cursor is there, and nothing beyond it (one transaction)
        assert len(networks) == n + 1
        assert f"10.0.{last >> 8 & 255}.{last & 255}/32" in networks


def test_failure_counters_round_trip_and_prune(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        assert store.offenders(0) is None          # never saved: an earlier version's store
        store.save_offenders([("c0000201", T0, b"x" * 24), ("c0000202", T0 + 5, b"y" * 24)])
        store.save_offenders([("c0000201", 0.0, None)])   # forgotten (banned, evicted)
        assert store.offenders(0) == [("c0000202", b"y" * 24)]
        assert store.offenders(T0 + 6) == []
        store.prune(T0, T0, T0, offenders_since=T0 + 6)
        assert store.offenders(0) == []
