"""The nft JSON builders, pure: exact payloads, no nft."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sshguardd.bans import nftjson as nft
from sshguardd.contracts import Ban

NOW = 1_700_000_000.0
L = nft.Layout(table="sshguardd", ports=(22,))


def ban(network: str, left: float = 600) -> Ban:
    return Ban(network=network, duration=left, until=NOW + left)


def ops(payload: dict) -> list[tuple[str, str]]:
    out = []
    for cmd in payload["nftables"]:
        (op, body), = cmd.items()
        (kind, _), = body.items()
        out.append((op, kind))
    return out


def test_setup_names_only_our_table_and_flushes_only_our_chain():
    payload = nft.setup(nft.Layout(table="guard", ports=(22, 2222)))
    json.dumps(payload)  # JSON-able
    assert ops(payload) == [("add", "table"), ("add", "set"), ("add", "set"), ("add", "set"),
                            ("add", "set"), ("add", "chain"), ("flush", "chain"),
                            ("add", "rule"), ("add", "rule"), ("add", "rule"), ("add", "rule")]
    for cmd in payload["nftables"]:
        (_, body), = cmd.items()
        (_, obj), = body.items()
        assert obj["family"] == "inet"
        assert obj.get("table", obj.get("name")) == "guard"
    assert not any("delete" in c for c in payload["nftables"])
    chain = payload["nftables"][5]["add"]["chain"]
    assert chain == {"family": "inet", "table": "guard", "name": "input", "type": "filter",
                     "hook": "input", "prio": -10, "policy": "accept"}


def test_sets_have_timeouts_and_prefix_sets_intervals():
    sets = {c["add"]["set"]["name"]: c["add"]["set"] for c in nft.setup(L)["nftables"]
            if "set" in c.get("add", {})}
    assert sets["addr4"]["type"] == "ipv4_addr" and sets["addr4"]["flags"] == ["timeout"]
    assert sets["addr6"]["type"] == "ipv6_addr" and sets["addr6"]["flags"] == ["timeout"]
    assert sets["net4"]["flags"] == ["interval", "timeout"]
    assert sets["net6"]["type"] == "ipv6_addr"


def test_rules_drop_ssh_ports_and_mask_to_the_prefix():
    rules = [c["add"]["rule"] for c in nft.setup(nft.Layout(ports=(2222, 22)))["nftables"]
             if "rule" in c.get("add", {})]
    assert len(rules) == 4
    for r in rules:
        assert r["chain"] == "input"
        assert r["expr"][0]["match"]["right"] == {"set": [22, 2222]}
        assert r["expr"][-1] == {"drop": None}
    by_set = {r["expr"][1]["match"]["right"]: r["expr"][1]["match"]["left"] for r in rules}
    assert by_set["@addr4"] == {"payload": {"protocol": "ip", "field": "saddr"}}
    assert by_set["@addr6"] == {"&": [{"payload": {"protocol": "ip6", "field": "saddr"}},
                                      "ffff:ffff:ffff:ffff::"]}
    assert by_set["@net6"] == {"payload": {"protocol": "ip6", "field": "saddr"}}
    one = next(c for c in nft.setup(L)["nftables"] if "rule" in c.get("add", {}))
    assert one["add"]["rule"]["expr"][0]["match"]["right"] == 22
    v4_24 = nft.setup(nft.Layout(ipv4_prefix=24))["nftables"]
    left = next(c["add"]["rule"]["expr"][1]["match"]["left"] for c in v4_24
                if "rule" in c.get("add", {}))
    assert left["&"][1] == "255.255.255.0"


def test_elements_go_to_the_right_set_with_remaining_time():
    cmds = nft.add_elements(L, [ban("192.0.2.1/32", 600), ban("2001:db8:1::/64", 3600),
                                ban("2001:db8:1::5/128", 60), ban("198.51.100.0/24", 90.2),
                                Ban("192.0.2.2/32", 600, NOW - 5)], NOW - 0.5)
    by_set = {c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in cmds}
    assert by_set["addr4"] == [{"elem": {"val": "192.0.2.1", "timeout": 601}}]
    assert by_set["addr6"] == [{"elem": {"val": "2001:db8:1::", "timeout": 3601}}]
    assert by_set["net6"] == [{"elem": {"val": {"prefix": {"addr": "2001:db8:1::5", "len": 128}},
                                        "timeout": 61}}]
    assert by_set["net4"] == [{"elem": {"val": {"prefix": {"addr": "198.51.100.0", "len": 24}},
                                        "timeout": 91}}]


def test_remaining_rounds_up_and_never_zero_while_active():
    assert nft.remaining(ban("192.0.2.1/32", 10), NOW) == 10
    assert nft.remaining(Ban("x", 1, NOW + 0.01), NOW) == 1
    assert nft.remaining(Ban("x", 1, NOW), NOW) == 0
    assert nft.remaining(Ban("x", 1, NOW - 1), NOW) == 0


def test_overlapping_prefixes_collapse_to_the_widest():
    nets = [(ipaddress.ip_network(n), 60) for n in
            ("10.1.0.0/16", "10.0.0.0/8", "10.1.2.0/24", "11.0.0.0/16", "2001:db8::/32",
             "2001:db8:5::/48", "2001:db9::/48")]
    kept, dropped = nft.collapse(nets)
    assert sorted(str(n) for n, _ in kept) == ["10.0.0.0/8", "11.0.0.0/16", "2001:db8::/32",
                                              "2001:db9::/48"]
    assert sorted(str(n) for n in dropped) == ["10.1.0.0/16", "10.1.2.0/24", "2001:db8:5::/48"]


def test_delete_never_fails_on_absent_elements():
    cmds = nft.delete_elements(L, ["192.0.2.1/32", "10.0.0.0/8"])
    assert [next(iter(c)) for c in cmds] == ["add", "add", "delete", "delete"]
    adds = {c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in cmds[:2]}
    assert adds["addr4"] == [{"elem": {"val": "192.0.2.1", "timeout": 1}}]
    dels = {c["delete"]["element"]["name"]: c["delete"]["element"]["elem"] for c in cmds[2:]}
    assert dels["net4"] == [{"prefix": {"addr": "10.0.0.0", "len": 8}}]


def test_replace_deletes_then_adds_and_recreate_deletes_only_our_table():
    cmds = nft.replace_elements(L, [ban("192.0.2.1/32", 100)], NOW)
    assert [next(iter(c)) for c in cmds] == ["add", "delete", "add"]
    assert cmds[-1]["add"]["element"]["elem"][0]["elem"]["timeout"] == 100
    rebuilt = nft.recreate(L)["nftables"]
    deletes = [c["delete"] for c in rebuilt if "delete" in c]
    assert deletes == [{"table": {"family": "inet", "name": "sshguardd"}}]
    assert rebuilt[0] == {"add": {"table": {"family": "inet", "name": "sshguardd"}}}


def test_flush_sets_and_batch():
    flush = nft.flush_sets(L)
    assert [c["flush"]["set"]["name"] for c in flush] == ["addr4", "addr6", "net4", "net6"]
    payload = nft.batch(flush, nft.add_elements(L, [ban("192.0.2.1/32")], NOW))
    assert len(payload["nftables"]) == 5


def test_batches_split_large_input_and_bad_networks_are_reported_or_raise():
    bans = [ban(f"10.0.{i >> 8}.{i & 255}/32") for i in range(250)] + [ban("2001:db8::/64")]
    batches = list(nft.add_batches(L, bans, NOW, 100))
    sizes = [sum(len(c["add"]["element"]["elem"]) for c in b) for b in batches]
    assert sizes == [100, 100, 51]
    bad: list[Ban] = []
    out = list(nft.add_batches(L, [ban("not-an-ip"), ban("192.0.2.1/32")], NOW, 100, bad))
    assert bad == [ban("not-an-ip")] and len(out) == 1
    with pytest.raises(ValueError):
        nft.add_elements(L, [ban("not-an-ip")], NOW)


def test_hand_written_payloads_equal_the_json_of_the_batches():
    bans = [ban(f"10.0.{i >> 8}.{i & 255}/32", 60 + i) for i in range(250)]
    bans += [ban("2001:db8:1::/64"), ban("2001:db8:1::7/128"), ban("198.51.100.0/24"),
             ban("198.51.100.0/25"), ban("192.0.2.9"), Ban("192.0.2.10/32", 5, NOW - 1)]
    first = nft.flush_sets(L)
    payloads = list(nft.add_payloads(L, bans, NOW, 100, first=first))
    batches = list(nft.add_batches(L, bans, NOW, 100))
    assert len(payloads) == len(batches) == 3
    decoded = [json.loads(p) for p in payloads]
    assert decoded[0] == {"nftables": first + batches[0]}
    assert decoded[1:] == [{"nftables": b} for b in batches[1:]]
    # nothing to add: the flush alone is still one transaction
    assert [json.loads(p) for p in nft.add_payloads(L, [], NOW, 100, first=first)] == \
        [{"nftables": first}]
    assert list(nft.add_payloads(L, [], NOW, 100)) == []


_nets = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: f"{ipaddress.IPv4Address(v)}/32"),
    st.integers(0, 2**64 - 1).map(lambda v: f"{ipaddress.IPv6Address(v << 64)}/64"),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 31)).map(
        lambda t: str(ipaddress.ip_network((t[0], t[1]), strict=False))),
    st.tuples(st.integers(0, 2**128 - 1), st.integers(16, 128)).map(
        lambda t: str(ipaddress.ip_network((t[0], t[1]), strict=False))),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_nets, st.floats(-100, 10**6)), max_size=40), st.integers(1, 7))
def test_payloads_always_match_batches_and_keep_every_live_ban(items, chunk):
    bans = [Ban(n, 1, NOW + left) for n, left in items]
    payloads = [json.loads(p) for p in nft.add_payloads(L, bans, NOW, chunk)]
    batches = list(nft.add_batches(L, bans, NOW, chunk))
    assert payloads == [{"nftables": b} for b in batches]
    present: dict[str, set] = {}
    for b in batches:
        for c in b:
            el = c["add"]["element"]
            for e in el["elem"]:
                assert e["elem"]["timeout"] >= 1
                v = e["elem"]["val"]
                present.setdefault(el["name"], set()).add(
                    v if isinstance(v, str) else f"{v['prefix']['addr']}/{v['prefix']['len']}")
    kept_ranges = [ipaddress.ip_network(v) for name in ("net4", "net6")
                   for v in present.get(name, ())]
    for b in bans:
        if b.until <= NOW:
            continue
        net = nft.parse_network(b.network)
        name = L.set_for(net)
        if name.startswith("addr"):
            assert str(net.network_address) in present[name]
        else:  # in the set itself, or covered by a wider range that is
            assert any(r.version == net.version and net.subnet_of(r) for r in kept_ranges)
