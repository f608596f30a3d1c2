"""The fleet's engine: Valkey or Redis (ElastiCache-compatible) through redis-py, Streams.

Keys, all under one cluster hash tag so a cluster keeps them in one slot (XREAD over many
streams and the snapshot beside its stream need that):

    {TAG}:ev:HOST      HOST's stream of bans and unbans (only HOST's ACL user may write)
    {TAG}:snap:HOST    HOST's active bans as of one of its entries (JSON, for resync)
    {TAG}:status:HOST  HOST's status record (JSON, expires after a TTL)

An entry is one field, e = "2 OP NET UNTIL KIND COUNT PUB SEQ" (space-separated text; the
leading 2 is the format's version). One field rather than eight because the server sends
every field name and value as its own RESP bulk string, and parsing those in redis-py was
half of what a host spent applying a burst of peers' bans. Entries in the first format
(eight fields v=1, op, net, until, kind, count, pub, seq) are still read. Its stream id is
"MS-SEQ" chosen by the publisher (MS: when it was decided, never decreasing; SEQ: the
publisher's own gap-free sequence), so publishing again after a crash is recognised by
the server ("equal or smaller than the target stream top item") instead of doubling the
entry, and MINID trimming by age still works on the MS part.

Requires the optional `redis` package (`pip install 'sshguardd[fleet]'`).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sshguardd.contracts import FleetEntry, FleetRead, FleetSnapshot

log = logging.getLogger(__name__)

MAX_SECRET = 4096           # bytes of a password file
MAX_SNAPSHOT = 64 << 20     # bytes of a peer's snapshot we are willing to parse
MAX_STATUS = 64 << 10       # bytes of a peer's status record
MAX_TLS_KEY = 64 << 10      # bytes of the client's TLS private key


class FleetUnavailable(Exception):
    """The engine cannot be reached or refused us; str() says which and why."""


def read_secret(path: Path | str, what: str = "fleet password file") -> str:
    """The password in path (first line). Opened like a setuid program would: no symlink,
    regular file, owned by root, not readable by group or others, at most 4 KiB."""
    data = _read_private(path, what, MAX_SECRET)
    lines = data.decode("utf-8", "strict").splitlines()
    return lines[0] if lines else ""


def _read_private(path: Path | str, what: str, limit: int) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FleetUnavailable(f"cannot open the {what} {path}: "
                               f"{exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FleetUnavailable(f"the {what} {path} is not a regular file")
        if st.st_uid != 0 or st.st_mode & 0o077:
            raise FleetUnavailable(f"the {what} {path} must be owned by root "
                                   f"and not readable by others (chmod 600; it is "
                                   f"uid {st.st_uid} mode {stat.S_IMODE(st.st_mode):o})")
        if st.st_size > limit:
            raise FleetUnavailable(f"the {what} {path} is larger than {limit >> 10} KiB")
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)


def entry_fields(entry: FleetEntry) -> dict[str, str]:
    """The stream entry for entry (see the module's docstring for the format)."""
    return {"e": f"2 {entry.op} {entry.network} {entry.until!r} {entry.kind} "
                 f"{entry.count!r} {entry.publisher} {entry.seq}"}


def parse_entry(fields: Mapping[Any, Any]) -> FleetEntry | None:
    """A stream entry's fields -> FleetEntry; None when anything is missing or odd."""
    raw = fields.get(b"e")
    if raw is None:
        raw = fields.get("e")  # a client made with decode_responses=True
        if raw is None:
            return _parse_v1(fields)
    try:
        parts = (raw.decode("utf-8") if isinstance(raw, bytes) else raw).split(" ")
        if len(parts) != 8 or parts[0] != "2":
            return None
        _, op, net, until, kind, count, pub, seq = parts
        if len(net) > 64 or len(kind) > 32 or len(pub) > 64:
            return None
        return FleetEntry(op, net, float(until), kind, float(count), pub, int(seq))
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None


def _parse_v1(fields: Mapping[Any, Any]) -> FleetEntry | None:
    """The first format: one field per value (v=1)."""
    try:
        f = {_text(k): _text(v) for k, v in fields.items()}
        if f.get("v") != "1" or len(f["net"]) > 64 or len(f["kind"]) > 32 \
                or len(f["pub"]) > 64:
            return None
        return FleetEntry(op=f["op"], network=f["net"], until=float(f["until"]),
                          kind=f["kind"], count=float(f["count"]), publisher=f["pub"],
                          seq=int(f["seq"]))
    except (KeyError, ValueError, UnicodeDecodeError, AttributeError):
        return None


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _unreachable_hint(exc: BaseException, url: str) -> str:
    """What to look at when the engine cannot be reached at all. sshguardd.service allows
    only localhost (IPAddressDeny=any): its filter makes connect() fail with EPERM, and a
    security group or firewall in between makes it time out."""
    text = str(exc)
    if url.startswith("unix://") or not (
            "Operation not permitted" in text or "Timeout connecting" in text
            or ("timed out" in text and "connect" in text.lower())):
        return ""
    return ("; if the engine is not on this host, the unit's IPAddressAllow= must let it "
            "in (`sshguardd fleet drop-in` prints the drop-in), and its security group "
            "must allow the port")


def id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class FleetTransport:
    """One host's connection to the fleet engine. Thread-safe as redis-py's client is
    (a connection pool): the fleet stage's reader blocks in read() while its writer
    publishes through the same object.

    url: redis://, rediss:// (TLS) or unix://. username/password: the host's ACL user.
    tls_*: CA bundle, client certificate and key for rediss://. client: an already made
    redis client (tests, the CLI).
    """

    def __init__(self, url: str, host: str, *, hashtag: str = "fleet",
                 username: str | None = None, password: str | None = None,
                 tls_ca_file: Path | str | None = None,
                 tls_cert_file: Path | str | None = None,
                 tls_key_file: Path | str | None = None, cluster: bool = False,
                 socket_timeout: float = 5.0, client: Any = None) -> None:
        self.url = url
        self.host = host
        self.tag = hashtag
        self.prefix = "{" + hashtag + "}:"
        self._block_timeout = socket_timeout
        if client is None:
            import redis

            kw: dict[str, Any] = {"username": username or None, "password": password,
                                  "socket_timeout": socket_timeout,
                                  "socket_connect_timeout": socket_timeout,
                                  "health_check_interval": 30}
            if url.startswith("rediss://"):
                kw.update(ssl_ca_certs=str(tls_ca_file) if tls_ca_file else None,
                          ssl_certfile=str(tls_cert_file) if tls_cert_file else None,
                          ssl_keyfile=str(tls_key_file) if tls_key_file else None)
            if cluster:
                client = redis.RedisCluster.from_url(url, **kw)  # type: ignore[no-untyped-call]
            else:
                client = redis.Redis.from_url(url, **kw)
        self.client = client

    # -- keys ----------------------------------------------------------------------------
    def stream(self, host: str) -> str:
        return f"{self.prefix}ev:{host}"

    def snapshot_key(self, host: str) -> str:
        return f"{self.prefix}snap:{host}"

    def status_key(self, host: str) -> str:
        return f"{self.prefix}status:{host}"

    def _host_of(self, key: Any, kind: str) -> str:
        return _text(key)[len(self.prefix) + len(kind) + 1:]

    # -- errors --------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        import redis

        try:
            return fn(*args, **kw)
        except redis.exceptions.NoPermissionError as exc:
            raise FleetUnavailable(f"{what} refused by the ACL at {self.url}: {exc}") from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            raise FleetUnavailable(f"{what} at {self.url} failed: {exc}"
                                   f"{_unreachable_hint(exc, self.url)}") from exc

    def ping(self) -> None:
        self._call("PING", self.client.ping)

    # -- publishing ----------------------------------------------------------------------
    def publish(self, items: Sequence[tuple[str, FleetEntry]], minid_ms: int) -> int:
        """XADD each (id, entry) to our stream, trimming entries older than minid_ms.
        An id the stream already holds is a repeat after a crash and is skipped; an id
        below the stream's top that it does not hold (the stream outlived our state
        store) is published with a server-chosen id instead. Returns entries added."""
        import redis

        if not items:
            return 0
        key = self.stream(self.host)
        pipe = self.client.pipeline(transaction=False)
        for entry_id, entry in items:
            pipe.xadd(key, entry_fields(entry), id=entry_id, minid=minid_ms,
                      approximate=True)
        results = self._call("XADD", pipe.execute, raise_on_error=False)
        added = 0
        for (entry_id, entry), result in zip(items, results, strict=True):
            if not isinstance(result, Exception):
                added += 1
                continue
            if isinstance(result, redis.exceptions.NoPermissionError):
                raise FleetUnavailable(f"XADD {key} refused by the ACL: {result}")
            if "equal or smaller" not in str(result):
                raise FleetUnavailable(f"XADD {key} {entry_id} failed: {result}")
            if self._call("XRANGE", self.client.xrange, key, entry_id, entry_id, count=1):
                continue  # published before a crash: the repeat is harmless to skip
            self._call("XADD", self.client.xadd, key, entry_fields(entry), id="*",
                       minid=minid_ms, approximate=True)
            added += 1
        return added

    def trim(self, minid_ms: int) -> None:
        """Exact trim (XADD's own trimming is approximate: whole radix-tree nodes only)."""
        self._call("XTRIM", self.client.xtrim, self.stream(self.host), minid=minid_ms,
                   approximate=False)

    def write_snapshot(self, entry_id: str, seq: int, bans: Sequence[FleetEntry]) -> None:
        doc = {"v": 1, "host": self.host, "id": entry_id, "seq": seq,
               "bans": [[b.network, b.until, b.kind, b.count] for b in bans]}
        self._call("SET", self.client.set, self.snapshot_key(self.host),
                   json.dumps(doc, separators=(",", ":")))

    def write_status(self, record: Mapping[str, Any], ttl: float) -> None:
        self._call("SET", self.client.set, self.status_key(self.host),
                   json.dumps(dict(record), separators=(",", ":")), ex=max(1, int(ttl)))

    # -- reading -------------------------------------------------------------------------
    def peers(self) -> list[str]:
        """Hosts that have a stream, ourselves left out."""
        found = {self._host_of(k, "ev") for k in self._call(
            "SCAN", lambda: list(self.client.scan_iter(match=f"{self.prefix}ev:*",
                                                       count=1000)))}
        found.discard(self.host)
        return sorted(found)

    def read(self, cursors: Mapping[str, str], count: int = 5000,
             block: float | None = 1.0) -> list[FleetRead]:
        """New entries of the peers' streams after their cursors ("0-0": from the
        start), waiting up to block seconds for the first."""
        if not cursors:
            return []
        streams = {self.stream(p): c for p, c in cursors.items()}
        block_ms = None if block is None else int(block * 1000)
        reply = self._call("XREAD", self.client.xread, streams, count=count,
                           block=block_ms)
        out = []
        for key, entries in reply or ():
            peer = self._host_of(key, "ev")
            out.append(FleetRead(peer, tuple((_text(i), parse_entry(f))
                                             for i, f in entries)))
        return out

    def has_after(self, peer: str, cursor: str) -> bool:
        """Does peer's stream hold anything after cursor?"""
        return bool(self._call("XRANGE", self.client.xrange, self.stream(peer),
                               "(" + cursor, "+", count=1))

    def read_snapshot(self, peer: str) -> FleetSnapshot | None:
        raw = self._call("GET", self.client.get, self.snapshot_key(peer))
        if raw is None or len(raw) > MAX_SNAPSHOT:
            return None
        try:
            doc = json.loads(raw)
            bans = tuple(FleetEntry("ban", str(n), float(u), str(k)[:32], float(c), peer,
                                    0) for n, u, k, c in doc["bans"])
            return FleetSnapshot(peer, str(doc["id"]), int(doc["seq"]), bans)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("fleet snapshot of %s does not parse: %s", peer, exc)
            return None

    def statuses(self) -> dict[str, dict[str, Any] | None]:
        """host -> its status record (None when it expired), for every host with a
        stream or a status record."""
        hosts = {self._host_of(k, "status") for k in self._call(
            "SCAN", lambda: list(self.client.scan_iter(match=f"{self.prefix}status:*",
                                                       count=1000)))}
        hosts |= set(self.peers()) | {self.host}
        out: dict[str, dict[str, Any] | None] = {}
        for h in sorted(hosts):
            raw = self._call("GET", self.client.get, self.status_key(h))
            rec: dict[str, Any] | None = None
            if raw is not None and len(raw) <= MAX_STATUS:
                try:
                    parsed = json.loads(raw)
                    rec = parsed if isinstance(parsed, dict) else None
                except ValueError:
                    rec = None
            if rec is not None or self._call("EXISTS", self.client.exists, self.stream(h)):
                out[h] = rec
        return out

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a broken connection must not mask why it broke
            log.debug("closing the fleet connection failed", exc_info=True)


# Commands a fleet host needs, and nothing that deletes: no DEL, UNLINK, XDEL, FLUSH*,
# KEYS, CONFIG or ACL. XTRIM on its own stream is how it ages entries out.
ACL_COMMANDS = ("ping", "hello", "auth", "client|setname", "xadd", "xread", "xrange",
                "xrevrange", "xtrim", "set", "get", "exists", "scan")


def acl_rule(host: str, hashtag: str = "fleet", password: str | None = None) -> str:
    """The ACL SETUSER arguments for host's user (docs/fleet.md): read every fleet key,
    write only its own stream, snapshot and status. password None: `>PASSWORD` literal
    for the docs. Valkey 7.2+ and Redis 7.0+ (key permissions %R~ / %W~)."""
    p = "{" + hashtag + "}:"
    cmds = " ".join("+" + c for c in ACL_COMMANDS)
    return (f"{host} on >{password if password is not None else 'PASSWORD'} resetkeys "
            f"%R~{p}* %W~{p}ev:{host} %W~{p}snap:{host} %W~{p}status:{host} "
            f"resetchannels -@all {cmds}")


def host_name(configured: str) -> str:
    """The fleet.host setting, or this machine's short hostname when it is empty."""
    import socket

    return configured or socket.gethostname().split(".", 1)[0]


def from_config(fleet: Any) -> FleetTransport:
    """The production transport for a config.FleetConfig (password read as read_secret
    demands). Raises FleetUnavailable when the redis package or the password is missing."""
    try:
        import redis  # noqa: F401  (the optional extra)
    except ImportError as exc:
        raise FleetUnavailable("fleet mode needs the redis client: pip install "
                               "'sshguardd[fleet]'") from exc
    host = host_name(fleet.host)
    password = read_secret(fleet.password_file) if fleet.password_file else None
    if fleet.tls_key_file is not None:  # a private key: the password file's rules
        _read_private(fleet.tls_key_file, "fleet.tls_key_file", MAX_TLS_KEY)
    for key in ("tls_ca_file", "tls_cert_file"):
        path = getattr(fleet, key)
        if path is not None and not os.path.isfile(path):
            raise FleetUnavailable(f"fleet.{key} {path}: no such file")
    return FleetTransport(fleet.url, host, hashtag=fleet.hashtag,
                          username=fleet.username or host, password=password,
                          tls_ca_file=fleet.tls_ca_file, tls_cert_file=fleet.tls_cert_file,
                          tls_key_file=fleet.tls_key_file, cluster=fleet.cluster)
