"""The ban policy: which sources to ban and for how long. Pure: no clock, no I/O.

Time arrives as data (each LogRecord's own timestamp), so the same journal always gives the
same bans, and tests need no clock.

Counting rule: attempts, not log lines
--------------------------------------
One failed password as an invalid user on OpenSSH 9.2 with PAM logs five lines (`Invalid
user`, two `pam_unix(sshd:auth)` lines, `Failed password`, `Connection closed by invalid
user ... [preauth]`). Counting lines would ban after two attempts instead of five, so the
lines of one connection are grouped by sshd's PID (record.pid; all lines of a connection,
including [preauth] ones relayed by the monitor, carry it) and each connection scores:

* auth attempts -- `Failed password/publickey/keyboard-interactive...` and other failed
  methods (BAD_PASSWORD, BAD_KEY, AUTH_FAILURE): each line is one attempt, the weights add
  up;
* refusals of the user itself -- INVALID_USER, ROOT_REFUSED, USER_NOT_ALLOWED, and
  MAX_AUTH_TRIES (a summary of attempts): count as at least one attempt. The connection
  scores max(sum of attempt weights, largest refusal weight), so `Invalid user` followed by
  its `Failed password` is one attempt, `Invalid user` followed by three is three, and an
  `Invalid user` probe that never sent a password is still one;
* probes -- PREAUTH_DISCONNECT, KEX_FAILURE, PROTOCOL_ERROR, TIMEOUT -- count only when the
  connection had no auth attempt or refusal, once per connection, with the largest weight
  among its probe lines (a banner scan that logs a kex error and a disconnect is one probe);
* PAM lines (`pam_unix(sshd:auth): ...`, `PAM: Authentication failure ...`) are never
  attempts of their own: sshd logs its own `Failed ...` line for the same attempt, and for
  keyboard-interactive PAM runs in a child with another PID (the classifier flags sshd's
  relays as Event.pam_relay; PAM's own lines give no Event);
* PENALTY (`drop connection ... penalty`) is logged by the listener, not the connection:
  each line is its own connection, as are all lines of a record without a PID.

An offender's score is the sum of the scores of its connections whose latest line lies
within find_time; reaching max_retry bans it. With the default weights max_retry = 5 means
five failed passwords (or five user names tried), ten pure probes, and failed public keys
(weight 0) never ban: clients offering several keys are normal.

Other rules
-----------
* Offenders are networks: IPv4 aggregated to ipv4_prefix (/32), IPv6 to ipv6_prefix (/64,
  one host or site typically owns a /64, so banning /128s is useless).
* Allow-listed networks (loopback by default), IPv6 link-local addresses (fe80::/10) and
  non-IP hosts (UseDNS names) never count.
  A prefix that contains an allow-listed address is never banned whole: its other
  addresses are counted and banned one by one (/32, /128).
* Admin protection (sshguardd.bans.protection): a recent login spares its network only
  for failures against the accounts that logged in from it, below protect_max_failures;
  take_withheld() hands out each newly spared network once, withheld() lists them.
* Escalation: strikes = 1 + bans of the network within history_time; duration =
  ban_time * escalation_factor ** (strikes - 1), capped at max_ban_time.
* Bounded memory: at most max_tracked offenders (and as many remembered logins, banned
  networks and ban histories); those seen least recently are evicted first (1/128 of
  the cap at a time) and counted in `evictions` (`ban_evictions` for bans and
  histories). An offender costs about 135 bytes (its connections are packed into one
  bytes object).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Mapping, Sequence

from sshguardd import durations
from sshguardd.bans.offenders import (  # the kind sets and MAX_CONNECTIONS: re-exported
    _CONN,
    ATTEMPTS,
    MAX_CONNECTIONS,
    PROBES,
    REFUSALS,
    STANDALONE,
    OffenderTable,
    _evict_count,
    _fresh,
    _parse_ip,
    _slot,
)

__all__ = ["ATTEMPTS", "MAX_CONNECTIONS", "PROBES", "REFUSALS", "STANDALONE", "BanPolicy"]
from sshguardd.bans.protection import AdminProtection, Withheld, restore_all
from sshguardd.config import BanConfig
from sshguardd.contracts import Ban, Event, Kind, LogRecord

_ACCEPTED = Kind.ACCEPTED
_MISSING = -1  # never a key (keys are >= 0)
_EPSILON = 1e-5  # float32 sums vs max_retry
# Offender keys are ints: the network address, plus flag bits above any address so that an
# IPv6 key never equals an IPv4 one and a lone address never equals its prefix.
_VALUE = (1 << 128) - 1
_V6 = 1 << 128
_FULL = 1 << 129
# fe80::/10: an address that means something only with its interface, which sshd does not
# log; a /64 ban would drop every link-local peer on every link. Never counted nor banned
# (docs/bans.md, "Link-local offenders").
_LINK_LOCAL = 0xFE80 >> 6
_KEYS_MAX = 1 << 14  # memoised host -> key entries (~1.5 MB at most)


class BanPolicy(OffenderTable):
    """Turns classified sshd messages into ban decisions.

    history: network -> start times of its earlier bans (Store.history), for escalation.
    logged_in: network -> time of its latest successful login (Store.logins), for admin
    protection across restarts; login_users: network -> the accounts that logged in from
    it (Store.login_users), which are what the protection covers. active: the bans in
    force (Store.active_bans), so lines from a banned network that were still in flight
    across a restart neither re-ban nor escalate it. The daemon persists what observe() returns.
    """

    def __init__(self, cfg: BanConfig, history: Mapping[str, Sequence[float]] | None = None,
                 logged_in: Mapping[str, float] | None = None, *,
                 active: Iterable[Ban] = (),
                 login_users: Mapping[str, Iterable[str]] | None = None):
        self.cfg = cfg
        self._weights: dict[Kind, float] = {kind: getattr(cfg.weights, kind.value)
                         for kind in Kind if kind is not Kind.ACCEPTED}
        self._allow = [ipaddress.ip_network(n) for n in cfg.allow]
        self._allow_ranges = [(n.version, int(n.network_address), int(n.broadcast_address))
                              for n in self._allow]
        self._offenders: dict[int, bytes] = {}
        # Per kind: (weight, slot, standalone, fresh): slot 2 attempts, 3 refusals, 4 probes
        # (the index in a connection), standalone for kinds that are their own connection
        # (STANDALONE), fresh the (attempts, refusal, probe, score) of a new connection
        # after one line of the kind, by the general path's own arithmetic (_fresh). One
        # lookup per event instead of three set tests and a weight lookup.
        self._kinds: dict[Kind, tuple[float, int, bool, tuple[float, float, float, float]]] = {
            kind: (w, _slot(kind), kind in STANDALONE, _fresh(_slot(kind), w))
            for kind, w in self._weights.items()}
        # IPv4 and IPv6 allow-list ranges apart, for _key_uncached's loop.
        self._allow_by_version = {
            version: tuple((lo, hi) for v, lo, hi in self._allow_ranges if v == version)
            for version in (4, 6)}
        # host -> _key(host), bounded: the key depends on the host and this policy's fixed
        # config only, and a flood repeats the same addresses (inet_pton and the allow
        # list cost more than the rest of an event).
        self._keys: dict[str, int | None] = {}
        self._banned: dict[int, float] = {}          # key -> until, for networks of our prefix
        self._wide: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, float]] = []
        self.protection = AdminProtection(cfg.protect_logged_in, cfg.protect_max_failures,
                                          cfg.max_tracked, _evict_count(cfg.max_tracked),
                                          self._network)
        # At most max_tracked networks' ban history, the most recently banned kept (a
        # million bans cost ~300 MB here before; past the cap an old offender's escalation
        # is forgotten, its rows stay in the store).
        recent = sorted((history or {}).items(), key=lambda item: max(item[1], default=0.0))
        self._history: dict[str, list[float]] = {
            n: sorted(ts) for n, ts in recent[-cfg.max_tracked:]}
        self._latest = 0.0
        self._dirty: set[int] = set()    # offenders changed since take_changes()
        self.evictions = 0
        self.ban_evictions = 0          # banned networks or histories forgotten at the cap
        restore_all(self.protection, logged_in or {}, login_users or {},
                    self._key_of_network)
        for ban in active:
            self._mark_banned(ban.network, ban.until)

    def note_banned(self, network: str, until: float) -> None:
        """Remember that `network` is banned until `until` (the store said so): lines
        from it neither ban nor escalate it again."""
        self._mark_banned(network, until)

    def _mark_banned(self, network: str, until: float) -> None:
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError:
            return
        key = self._key_of_network(network)
        if key is not None and self._network(key) == str(net):
            self._put_banned(key, max(until, self._banned.get(key, until)))
        else:
            self._wide.append((net, until))

    # -- addresses -----------------------------------------------------------------------
    def _key(self, host: str) -> int | None:
        """The offender key of an address: its network as an int, IPv6 flagged by _V6, and
        _FULL when the address stands alone (see _aggregated). Memoised (bounded)."""
        keys = self._keys
        if host in keys:
            return keys[host]
        key = self._key_uncached(host)
        if len(keys) >= _KEYS_MAX:
            keys.clear()  # bounded: distinct addresses cannot grow it past the cap
        keys[host] = key
        return key

    def _key_uncached(self, host: str) -> int | None:
        parsed = _parse_ip(host)
        if parsed is None:
            return None
        version, value = parsed
        for lo, hi in self._allow_by_version[version]:  # allow-listed
            if lo <= value <= hi:
                return None
        if version == 6 and value >> 118 == _LINK_LOCAL:
            return None
        if version == 4:
            shift, family = 32 - self.cfg.ipv4_prefix, 0
        else:
            shift, family = 128 - self.cfg.ipv6_prefix, _V6
        if not shift:
            return family | value
        net = value >> shift << shift
        if self._allow_inside(version, net, net | ((1 << shift) - 1)):
            # Banning the whole prefix would ban an allow-listed address inside it (the
            # admin's /128 in the attacker's /64): count and ban this address alone.
            return family | _FULL | value
        return family | net

    def _allow_inside(self, version: int, lo: int, hi: int) -> bool:
        for v, a_lo, a_hi in self._allow_ranges:
            if v == version and a_lo <= hi and lo <= a_hi:
                return True
        return False

    def _key_of_network(self, network: str) -> int | None:
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError:
            return None
        return self._key(str(net.network_address))

    def _network(self, key: int) -> str:
        value = key & _VALUE
        if key & _V6:
            prefix = 128 if key & _FULL else self.cfg.ipv6_prefix
            return f"{ipaddress.IPv6Address(value)}/{prefix}"
        prefix = 32 if key & _FULL else self.cfg.ipv4_prefix
        return f"{ipaddress.IPv4Address(value)}/{prefix}"

    def network_of(self, addr: str) -> str | None:
        """The network an address is counted and banned as ('2001:db8::/64',
        '192.0.2.7/32'); None for allow-listed addresses and non-IP hosts."""
        key = self._key(addr)
        return None if key is None else self._network(key)

    # -- observing -----------------------------------------------------------------------
    @property
    def tracked(self) -> int:
        """Offenders currently counted (bounded by max_tracked)."""
        return len(self._offenders)

    def observe(self, record: LogRecord, event: Event) -> Ban | None:
        """Feed one classified message; returns a Ban when it tips its network over
        max_retry. Success events (Kind.ACCEPTED) record the login for admin protection."""
        return self.observe_raw(event.kind, event.host, event.user, event.pam_relay,
                                record.pid, record.time)

    def observe_raw(self, kind: Kind, host: str, user: str | None, pam_relay: bool,
                    pid: int | None, time: float | None) -> Ban | None:
        """observe() from the Event's and the LogRecord's fields, for callers that hold
        them unpacked (scan --summary builds neither object per event)."""
        t = time if time is not None else self._latest
        if t > self._latest:
            self._latest = t
        key = self._keys.get(host, _MISSING)
        if key is _MISSING:
            key = self._key(host)
        if key is None:
            return None
        if kind is _ACCEPTED:
            if self.cfg.protect_logged_in > 0:
                self.protection.remember(key, t, user)
            return None
        if pam_relay:  # corroboration of an attempt sshd logs itself
            return None
        if self._banned:
            until = self._banned.get(key)
            if until is not None:
                if until > t:
                    return None  # already banned: in-flight lines must not re-ban or escalate
                del self._banned[key]
        if self._wide and self._covered_by_wide(key, t):
            return None

        score = self._count(key, pid, kind, t)
        if score + _EPSILON < self.cfg.max_retry or not self.cfg.enabled:
            return None
        protected = self.protection.judge(key, t, score, user)
        if protected is None:
            return None  # withheld: counted and listed by the protection
        del self._offenders[key]
        self._dirty.add(key)
        reason = (f"{score:g} failed attempt{'' if score == 1 else 's'} within "
                  f"{_fmt(self.cfg.find_time)}, last {kind.value}{protected}")
        return self._ban(self._network(key), key, t, None, reason)

    @property
    def suppressed(self) -> int:
        """Bans admin protection withheld."""
        return self.protection.suppressed

    def take_withheld(self) -> list[Withheld]:
        """Networks whose ban admin protection withheld for the first time (within this
        protection) since the last call: the daemon logs each once."""
        return self.protection.take_new()

    def withheld(self) -> list[Withheld]:
        """The networks admin protection spares now, latest first (at most MAX_WITHHELD),
        for `status` and `bans`."""
        return self.protection.withheld()

    # -- banning -------------------------------------------------------------------------
    def _strikes(self, network: str, t: float) -> int:
        since = t - self.cfg.history_time
        return 1 + sum(1 for h in self._history.get(network, ()) if h >= since)

    def duration_for(self, strikes: int) -> float:
        """Ban time for the n-th ban within history_time (1 = first offence)."""
        try:
            d = self.cfg.ban_time * self.cfg.escalation_factor ** (strikes - 1)
        except OverflowError:  # float ** int raises rather than returning inf
            return self.cfg.max_ban_time
        return min(d, self.cfg.max_ban_time)

    def _ban(self, network: str, key: int | None, t: float, duration: float | None,
             reason: str) -> Ban:
        strikes = self._strikes(network, t)
        if duration is None:
            duration = self.duration_for(strikes)
        times = self._history.pop(network, None)
        if times is None and len(self._history) >= self.cfg.max_tracked:
            for old in list(itertools.islice(self._history, _evict_count(self.cfg.max_tracked))):
                del self._history[old]
            self.ban_evictions += _evict_count(self.cfg.max_tracked)
        self._history[network] = [*(times or ()), t]   # most recently banned last
        until = t + duration
        if key is not None:
            self._put_banned(key, until)
        return Ban(network=network, duration=duration, until=until, strikes=strikes,
                   reason=reason)

    def _put_banned(self, key: int, until: float) -> None:
        """Remember a ban, at most max_tracked of them (soonest-remembered forgotten first:
        the daemon asks the store before it bans again, so a forgotten one is not
        decided twice)."""
        self._banned.pop(key, None)
        if len(self._banned) >= self.cfg.max_tracked:
            victims = list(itertools.islice(self._banned, _evict_count(self.cfg.max_tracked)))
            for old in victims:
                del self._banned[old]
            self.ban_evictions += len(victims)
        self._banned[key] = until

    @property
    def banned_tracked(self) -> int:
        """Bans the policy remembers (bounded by max_tracked)."""
        return len(self._banned)

    def _covered_by_wide(self, key: int, t: float) -> bool:
        value = key & _VALUE
        addr = ipaddress.IPv6Address(value) if key & _V6 else ipaddress.IPv4Address(value)
        alive = [(n, u) for n, u in self._wide if u > t]
        self._wide = alive
        return any(addr.version == n.version and addr in n for n, _ in alive)

    def manual_ban(self, network_or_addr: str, duration: float | None, now: float) -> Ban:
        """Ban on an admin's request. An address is banned as its offender network (like
        an automatic ban); a CIDR as written. duration None: the escalated ban time.
        Raises ValueError for something that is not an address or network, or that
        overlaps the allow-list (banning 0.0.0.0/0 or loopback would lock everyone out)."""
        text = network_or_addr.strip()
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or network: {network_or_addr!r}") from None
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
            net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/"
                                       f"{max(0, net.prefixlen - 96)}")
        if net.version == 6 and net.overlaps(ipaddress.ip_network("fe80::/10")):
            raise ValueError(f"{net} is link-local: sshguardd does not ban link-local "
                             "addresses (they mean nothing without their interface)")
        for allowed in self._allow:
            if allowed.version == net.version and allowed.overlaps(net):
                raise ValueError(f"{net} overlaps the allow-list entry {allowed}")
        if duration is not None:
            # A number off the control socket: JSON spells Infinity and NaN, and nft
            # refuses timeouts past its range, failing every ban of the transaction.
            durations.check_ban_length(duration)
        if "/" not in text:
            key = self._key(str(net.network_address))
            if key is None:  # cannot happen: not allow-listed, checked above
                raise ValueError(f"{net} cannot be banned")
            network = self._network(key)
        else:
            network = str(net)
            key = self._key_of_network(network)
            if network != (self._network(key) if key is not None else None):
                key = None
        if key is not None:
            if self._offenders.pop(key, None) is not None:
                self._dirty.add(key)
            ban = self._ban(network, key, now, duration, "manual")
        else:
            # The kernel's interval sets reject overlapping prefixes, so a range inside or
            # around a live one must be unbanned first (the same range again is fine).
            wide = ipaddress.ip_network(network)
            for other, until in self._wide:
                if until > now and other != wide and other.version == wide.version \
                        and other.overlaps(wide):
                    raise ValueError(f"{wide} overlaps the active ban of {other}; "
                                     "unban that first")
            self._wide = [(n, u) for n, u in self._wide if n != wide]
            ban = self._ban(network, None, now, duration, "manual")
            self._wide.append((ipaddress.ip_network(network), ban.until))
        return ban

    def shift_bans(self, delta: float) -> None:
        """The wall clock stepped by `delta`: active bans end that much later (or earlier)
        in log time, since the kernel's timeouts are relative and ran on unchanged."""
        self._banned = {k: u + delta for k, u in self._banned.items()}
        self._wide = [(n, u + delta) for n, u in self._wide]

    def forget(self, network: str) -> None:
        """Unban: drop what the policy remembers of this network's current ban and
        failures (its ban history stays, so a relapse still escalates)."""
        key = self._key_of_network(network)
        net = ipaddress.ip_network(network, strict=False)
        if key is not None and self._network(key) == str(net):
            self._banned.pop(key, None)
            if self._offenders.pop(key, None) is not None:
                self._dirty.add(key)
        self._wide = [(n, u) for n, u in self._wide if n != net]

    def expire(self, now: float) -> None:
        """Drop counters, bans, logins and history that can no longer matter at `now`."""
        horizon = now - self.cfg.find_time
        stale = []
        # Offenders are kept in order of their latest line, so the stale ones lead.
        for key, packed in self._offenders.items():
            if max(c[0] for c in _CONN.iter_unpack(packed)) >= horizon:
                break
            stale.append(key)
        for key in stale:
            del self._offenders[key]
        self._dirty.update(stale)
        self._banned = {k: u for k, u in self._banned.items() if u > now}
        self._wide = [(n, u) for n, u in self._wide if u > now]
        self.protection.expire(now, horizon)
        since = now - self.cfg.history_time
        history = {}
        for network, times in self._history.items():
            kept = [h for h in times if h >= since]
            if kept:
                history[network] = kept
        self._history = history


def _fmt(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
