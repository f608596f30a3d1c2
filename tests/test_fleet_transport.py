"""The fleet transport against a real redis-server (Debian's 7.0) with the documented ACL
users: what a host may and may not write, idempotent publishing, trimming, snapshots,
status records, and the password file's checks."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fleet_helpers import RedisServer
from sshguardd.contracts import FleetEntry
from sshguardd.effects.fleet_transport import (
    FleetUnavailable,
    acl_rule,
    entry_fields,
    parse_entry,
    read_secret,
)

HOSTS = ("h1", "h2", "h3")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path, HOSTS).start()
    yield srv
    srv.close()


def entry(seq: int, net: str = "203.0.113.5", op: str = "ban", pub: str = "h1") -> FleetEntry:
    return FleetEntry(op, net, 1_900_000_000.0, "bad_password", 5.0, pub, seq)


def test_acl_a_host_writes_only_its_own_keys_and_deletes_nothing(server: RedisServer) -> None:
    h1, h2 = server.client("h1"), server.client("h2")
    try:
        h1.xadd("{fleet}:ev:h1", {"op": "ban"}, id="1000-1")
        h1.set("{fleet}:snap:h1", "{}")
        for key, call in (("{fleet}:ev:h1", lambda: h2.xadd("{fleet}:ev:h1", {"op": "ban"})),
                          ("{fleet}:snap:h1", lambda: h2.set("{fleet}:snap:h1", "{}")),
                          ("{fleet}:status:h1", lambda: h2.set("{fleet}:status:h1", "{}")),
                          ("{fleet}:other", lambda: h2.set("{fleet}:other", "x"))):
            with pytest.raises(redis.exceptions.NoPermissionError) as exc:
                call()
            assert "no permissions to access one of the keys" in str(exc.value), key
        for call in (lambda: h2.delete("{fleet}:ev:h2"), lambda: h2.xdel("{fleet}:ev:h1", "1000-1"),
                     lambda: h2.flushall(), lambda: h2.execute_command("ACL", "LIST"),
                     lambda: h2.execute_command("CONFIG", "GET", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                call()
        # reading every host's keys is allowed
        assert h2.xrange("{fleet}:ev:h1")[0][0] == b"1000-1"
        assert h2.get("{fleet}:snap:h1") == b"{}"
        # the transport turns a refusal into FleetUnavailable naming the ACL
        wrong = server.transport("h2")
        wrong.host = "h1"  # a compromised h2 pretending to be h1
        with pytest.raises(FleetUnavailable, match="refused by the ACL"):
            wrong.publish([("2000-1", entry(1))], 0)
        wrong.close()
    finally:
        h1.close()
        h2.close()


def test_publish_is_idempotent_and_read_parses(server: RedisServer) -> None:
    t1, t2, admin = server.transport("h1"), server.transport("h2"), server.admin()
    try:
        items = [(f"{1000 + i}-{i + 1}", entry(i + 1, f"203.0.113.{i}")) for i in range(3)]
        assert t1.publish(items, 0) == 3
        assert t1.publish(items, 0) == 0          # a repeat after a crash: no new entries
        assert admin.xlen("{fleet}:ev:h1") == 3
        assert t2.peers() == ["h1"] and t1.peers() == []
        (read,) = t2.read({"h1": "0-0"}, block=None)
        assert read.peer == "h1" and [e.seq for _, e in read.entries if e] == [1, 2, 3]
        assert read.entries[0][1] == entry(1, "203.0.113.0")
        assert t2.read({"h1": read.entries[-1][0]}, block=0.05) == []
        # an id below the top that the stream does not hold (our state store is newer than
        # the stream's history) still gets published, under a server-chosen id
        assert t1.publish([("1000-9", entry(9))], 0) == 1
        assert admin.xlen("{fleet}:ev:h1") == 4
        # malformed entries read as None
        server.client("h1").xadd("{fleet}:ev:h1", {"v": "1", "op": "ban"})
        (read,) = t2.read({"h1": "1002-3"}, block=None)
        assert read.entries[-1][1] is None and read.entries[0][1] == entry(9)
    finally:
        t1.close()
        t2.close()
        admin.close()


def test_minid_trims_by_age_and_has_after(server: RedisServer) -> None:
    t1 = server.transport("h1")
    try:
        now_ms = int(time.time() * 1000)
        old = [(f"{now_ms - 7200_000 + i}-{i + 1}", entry(i + 1)) for i in range(500)]
        t1.publish(old, 0)
        t1.publish([(f"{now_ms}-501", entry(501))], now_ms - 3600_000)
        t1.trim(now_ms - 3600_000)
        ids = [i for i, _ in t1.client.xrange("{fleet}:ev:h1")]
        assert ids == [f"{now_ms}-501".encode()]
        assert t1.has_after("h1", f"{now_ms - 7200_000}-1")
        assert not t1.has_after("h1", f"{now_ms}-501")
    finally:
        t1.close()


def test_snapshot_and_status_records(server: RedisServer) -> None:
    t1, t2 = server.transport("h1"), server.transport("h2")
    try:
        t1.write_snapshot("5000-7", 7, [entry(0, "203.0.113.9")])
        snap = t2.read_snapshot("h1")
        assert snap is not None and (snap.entry_id, snap.seq) == ("5000-7", 7)
        assert snap.bans[0].network == "203.0.113.9" and snap.bans[0].publisher == "h1"
        assert t2.read_snapshot("h3") is None
        t1.write_status({"host": "h1", "bans_active": 3}, ttl=30)
        t1.publish([("1-1", entry(1))], 0)
        t2.client.xadd("{fleet}:ev:h2", {"v": "1"}, id="1-1")  # a host with no status
        st = t2.statuses()
        assert st == {"h1": {"host": "h1", "bans_active": 3}, "h2": None}
        admin = server.admin()
        assert 0 < admin.ttl("{fleet}:status:h1") <= 30
        admin.close()
    finally:
        t1.close()
        t2.close()


def test_unreachable_engine_is_fleet_unavailable(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path, HOSTS)  # never started
    t = srv.transport("h1", socket_timeout=1.0)
    with pytest.raises(FleetUnavailable, match="PING"):
        t.ping()
    t.close()


def test_password_file_must_be_private(tmp_path: Path) -> None:
    good = tmp_path / "pw"
    good.write_text("s3cret\n")
    os.chmod(good, 0o600)
    assert read_secret(good) == "s3cret"
    os.chmod(good, 0o640)
    with pytest.raises(FleetUnavailable, match="not readable by others"):
        read_secret(good)
    os.chmod(good, 0o600)
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(FleetUnavailable, match="cannot open"):
        read_secret(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(FleetUnavailable, match="not a regular file"):
        read_secret(fifo)  # O_NONBLOCK: a FIFO without a writer does not hang us
    big = tmp_path / "big"
    big.write_text("x" * 5000)
    os.chmod(big, 0o600)
    with pytest.raises(FleetUnavailable, match="larger than 4 KiB"):
        read_secret(big)


def test_the_documented_acl_line_is_the_one_tested_here() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "fleet.md").read_text()
    assert "ACL SETUSER " + acl_rule("web-1") in doc


def test_an_entry_is_one_field_and_the_first_format_still_reads() -> None:
    entry = FleetEntry("ban", "203.0.113.9/32", 1_800_000_600.5, "bad_password", 5.0, "h1", 7)
    fields = entry_fields(entry)
    assert list(fields) == ["e"]
    assert parse_entry({k.encode(): v.encode() for k, v in fields.items()}) == entry
    assert parse_entry(fields) == entry                      # decode_responses=True
    v1 = {b"v": b"1", b"op": b"ban", b"net": b"203.0.113.9/32", b"until": b"1800000600.5",
          b"kind": b"bad_password", b"count": b"5.0", b"pub": b"h1", b"seq": b"7"}
    assert parse_entry(v1) == entry
    good = fields["e"]
    for bad in (good.replace("2 ", "3 ", 1), good + " extra", good.rsplit(" ", 1)[0],
                good.replace("203.0.113.9/32", "x" * 65), good.replace("h1", "h" * 65),
                good.replace(" 7", " seven"), "\xff", ""):
        assert parse_entry({b"e": bad.encode("utf-8", "surrogateescape")}) is None, bad
    assert parse_entry({b"e": b"\xff\xfe"}) is None
