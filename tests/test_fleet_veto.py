"""The local veto over peers' bans (bans/fleet_veto.py): pure, so judged with plain data."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sshguardd.bans.fleet_veto import Change, FleetVeto
from sshguardd.config import BanConfig, FleetConfig
from sshguardd.contracts import FleetEntry

NOW = 1_800_000_000.0


def veto(quorum: int = 1, rate: int = 100, **fleet: object) -> FleetVeto:
    cfg = FleetConfig(enabled=True, quorum=quorum, max_bans_per_publisher=rate,
                      never_ban=("10.0.0.0/8", "3.16.146.0/29"), **fleet)  # type: ignore[arg-type]
    ban = BanConfig(allow=("127.0.0.0/8", "::1/128", "192.0.2.10/32"))
    return FleetVeto(cfg, ban, logged_in={"198.51.100.7/32": NOW - 60})


def e(pub: str, net: str, until: float = NOW + 600, op: str = "ban", seq: int = 1) -> FleetEntry:
    return FleetEntry(op, net, until, "bad_password", 5, pub, seq)


def test_a_plain_ban_passes() -> None:
    v = veto()
    j = v.judge("h1", e("h1", "203.0.113.5"), NOW)
    assert j.veto is None and j.changes == (Change("203.0.113.5/32", NOW + 600, None),)
    assert v.applied == {"203.0.113.5/32": NOW + 600}


def test_each_veto_reason() -> None:
    v = veto()
    cases = {
        "127.0.0.1": "loopback", "::1": "loopback", "::ffff:127.0.0.1": "loopback",
        "0.0.0.0/0": "loopback", "203.0.0.0/8": "prefix", "2001:db8::/32": "prefix",
        "192.0.2.10": "allow", "192.0.2.0/24": "allow",       # a wide ban over an allowed host
        "10.1.2.3": "never_ban", "3.16.146.4": "never_ban",    # VPC, EC2 Instance Connect
        "198.51.100.7": "admin", "198.51.100.0/24": "admin",   # logged in here a minute ago
        "not-an-address": "malformed",
    }
    for net, reason in cases.items():
        j = v.judge("h1", e("h1", net), NOW)
        assert (net, j.veto, j.changes) == (net, reason, ()), net
    assert v.judge("h1", e("h2", "203.0.113.5"), NOW).veto == "publisher"  # forged field
    assert v.judge("h1", e("h1", "203.0.113.5", until=NOW - 1), NOW).veto == "expired"
    assert v.judge("h1", None, NOW).veto == "malformed"
    assert v.judge("h1", e("h1", "203.0.113.5", op="flush"), NOW).veto == "malformed"
    assert v.judge("h1", e("h1", "203.0.113.5", until=float("inf")), NOW).veto == "malformed"
    assert v.applied == {}


def test_admin_protection_ends_with_protect_logged_in() -> None:
    v = veto()
    later = NOW + BanConfig().protect_logged_in + 1
    assert v.judge("h1", e("h1", "198.51.100.7", until=later + 600), later).veto is None


def test_a_peer_cannot_ban_for_longer_than_max_ban_time() -> None:
    v = veto()
    v.judge("h1", e("h1", "203.0.113.5", until=NOW + 10 * 365 * 86400), NOW)
    assert v.applied["203.0.113.5/32"] == NOW + BanConfig().max_ban_time


def test_quorum_needs_k_distinct_publishers_and_takes_the_kth_expiry() -> None:
    v = veto(quorum=2)
    assert v.judge("h1", e("h1", "203.0.113.5", NOW + 900), NOW).changes == ()
    assert v.judge("h1", e("h1", "203.0.113.5", NOW + 950), NOW).changes == ()  # still one
    j = v.judge("h2", e("h2", "203.0.113.5", NOW + 300), NOW)
    assert j.changes == (Change("203.0.113.5/32", NOW + 300, None),)
    j = v.judge("h3", e("h3", "203.0.113.5", NOW + 600), NOW)
    assert j.changes == (Change("203.0.113.5/32", NOW + 600, NOW + 300),)


def test_an_unban_removes_only_that_publishers_contribution() -> None:
    v = veto(quorum=1)
    v.judge("h1", e("h1", "203.0.113.5", NOW + 900), NOW)
    v.judge("h2", e("h2", "203.0.113.5", NOW + 300), NOW)
    # h2 lifting "its" ban leaves h1's in force
    assert v.judge("h2", e("h2", "203.0.113.5", 0, "unban"), NOW).changes == (
        Change("203.0.113.5/32", NOW + 900, NOW + 900),)  # same expiry, one holder fewer
    assert v.applied == {"203.0.113.5/32": NOW + 900}
    # an unban of something h3 never banned changes nothing
    assert v.judge("h3", e("h3", "203.0.113.5", 0, "unban"), NOW).changes == ()
    j = v.judge("h1", e("h1", "203.0.113.5", 0, "unban"), NOW)
    assert j.changes == (Change("203.0.113.5/32", None, NOW + 900),)


def test_a_flooding_publisher_is_quarantined_and_its_bans_withdrawn() -> None:
    v = veto(rate=5, rate_window=60)
    v.judge("h2", e("h2", "198.18.9.1"), NOW)
    for i in range(4):
        assert v.judge("h3", e("h3", f"203.0.113.{i}"), NOW + i).veto is None
    v.judge("h3", e("h3", "198.18.9.1"), NOW + 5)  # h2 agrees with h3 about this one
    # the sixth ban within the minute is one too many
    j = v.judge("h3", e("h3", "203.0.113.99"), NOW + 6)
    assert j.quarantined and j.veto == "quarantined"
    assert {c.network for c in j.changes if c.until is None} == {
        f"203.0.113.{i}/32" for i in range(4)}
    assert set(v.applied) == {"198.18.9.1/32"}  # still held by h2
    assert v.judge("h3", e("h3", "203.0.113.100"), NOW + 7).veto == "quarantined"
    assert v.quarantined(NOW + 7) == {"h3": NOW + 6 + 3600}
    # over when the quarantine ends
    assert v.judge("h3", e("h3", "203.0.113.100", NOW + 9000), NOW + 3607).veto is None


def test_the_window_slides() -> None:
    v = veto(rate=5, rate_window=60)
    for i in range(50):  # one a minute: never more than 5 within 60 s
        assert v.judge("h3", e("h3", f"203.0.113.{i}", NOW + 86400), NOW + 30 * i).veto is None


def test_resync_replaces_a_publishers_contributions() -> None:
    v = veto()
    v.judge("h1", e("h1", "203.0.113.1"), NOW)
    v.judge("h1", e("h1", "203.0.113.2"), NOW)
    v.judge("h2", e("h2", "203.0.113.2"), NOW)
    j, vetoed = v.resync("h1", [e("h1", "203.0.113.3"), e("h1", "127.0.0.9"),
                                e("h1", "10.9.9.9")], NOW)
    assert vetoed == {"loopback": 1, "never_ban": 1}
    assert {c.network: c.until for c in j.changes} == {
        "203.0.113.1/32": None, "203.0.113.3/32": NOW + 600,
        "203.0.113.2/32": NOW + 600}  # still held, by h2 alone now
    assert set(v.applied) == {"203.0.113.2/32", "203.0.113.3/32"}
    j, _ = v.resync("h1", [e("h1", f"203.0.114.{i}") for i in range(20)], NOW, max_bans=10)
    assert j.quarantined


def test_contributions_survive_a_restart_through_drain() -> None:
    v = veto(quorum=2)
    v.judge("h1", e("h1", "203.0.113.5"), NOW)
    v.judge("h2", e("h2", "203.0.113.5"), NOW)
    rows = {(c.network, c.publisher): c.until for c in v.drain()}
    again = FleetVeto(v.fleet, v.ban, contributions=[(n, p, u) for (n, p), u in rows.items()])
    assert again.applied == v.applied
    v.expire(NOW + 601)
    assert v.applied == {} and {c.until for c in v.drain()} == {None}


PUBS = st.sampled_from(["h1", "h2", "h3", "h4"])
OPS = st.lists(st.tuples(PUBS, st.sampled_from(["ban", "unban"]),
                         st.integers(1, 3), st.integers(100, 900)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops=OPS, quorum=st.integers(1, 3))
def test_the_fleet_bans_exactly_what_k_live_publishers_hold(
        ops: list[tuple[str, str, int, int]], quorum: int) -> None:
    v = veto(quorum=quorum)
    held: dict[str, dict[str, float]] = {}
    for pub, op, host, ttl in ops:
        net = f"203.0.113.{host}/32"
        v.judge(pub, e(pub, net, NOW + ttl if op == "ban" else 0, op), NOW)
        if op == "ban":
            held.setdefault(net, {})[pub] = NOW + ttl
        else:
            held.get(net, {}).pop(pub, None)
    want = {n: sorted(p.values(), reverse=True)[quorum - 1]
            for n, p in held.items() if len(p) >= quorum}
    assert dict(v.applied) == want
    print(f"fleet veto property: {len(ops)} entries")


def _reference_reason(net: str, never: list[str]) -> str | None:
    """The veto's order written the slow way (ipaddress objects), to check the one
    bisection over the union of loopback, allow and never_ban against it."""
    import ipaddress

    n = ipaddress.ip_network(net, strict=False)

    def hits(nets: list[str]) -> bool:
        return any(n.overlaps(ipaddress.ip_network(x)) for x in nets
                   if ipaddress.ip_network(x).version == n.version)
    if hits(["127.0.0.0/8", "::1/128", "::/128", "::ffff:127.0.0.0/104", "0.0.0.0/32"]):
        return "loopback"
    if n.prefixlen < (24 if n.version == 4 else 48):
        return "prefix"
    if hits(["127.0.0.0/8", "::1/128", "192.0.2.10/32"]):
        return "allow"
    if hits(never):
        return "never_ban"
    return None


NETS4 = st.builds(lambda a, p: str(ipaddress_net(a, p)), st.integers(0, 2**32 - 1),
                  st.integers(12, 32))


def ipaddress_net(addr: int, prefix: int) -> str:
    import ipaddress

    return str(ipaddress.ip_network((addr >> (32 - prefix) << (32 - prefix), prefix)))


@settings(max_examples=300, deadline=None)
@given(nets=st.lists(NETS4, min_size=1, max_size=20), never=st.lists(NETS4, max_size=30))
def test_the_veto_agrees_with_the_slow_ordered_checks(nets: list[str],
                                                      never: list[str]) -> None:
    cfg = FleetConfig(enabled=True, max_bans_per_publisher=10_000, never_ban=tuple(never))
    v = FleetVeto(cfg, BanConfig(allow=("127.0.0.0/8", "::1/128", "192.0.2.10/32"),
                                 protect_logged_in=0))
    batch = v.judge_all("h1", [e("h1", n, seq=i) for i, n in enumerate(nets, 1)], NOW)
    want: dict[str, int] = {}
    for n in nets:
        reason = _reference_reason(n, never)
        if reason is not None:
            want[reason] = want.get(reason, 0) + 1
    assert batch.vetoed == want
    print(f"fleet veto vs reference: {len(nets)} networks, {len(never)} never_ban")
