"""NftFirewall against the real kernel: every test gets a fresh private network namespace
(a holder process made by `unshare --net`), and nft runs inside it through nsenter, so the
host's (and the suite's) ruleset is never touched."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from sshguardd.contracts import Ban
from sshguardd.demo.sandbox import wait_for
from sshguardd.effects.nft_runner import FirewallError, NftFirewall

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NFT = "/usr/sbin/nft"


class NetNs:
    """A private network namespace held open by a sleeping process."""

    def __init__(self) -> None:
        # --kill-child: the sleeper dies with unshare, so nothing outlives the test.
        self.proc = subprocess.Popen(["unshare", "--net", "--fork", "--kill-child", "--",
                                      "sleep", "infinity"], stdin=subprocess.DEVNULL)
        # unshare(2) happens before the fork: once the namespace differs from ours, it is
        # ready (unshare's own pid is inside it).
        mine = os.readlink("/proc/self/ns/net")
        wait_for(lambda: self._ns() not in (None, mine), what="the new net namespace")
        self.run(["ip", "link", "set", "lo", "up"], check=True)

    def _ns(self) -> str | None:
        try:
            return os.readlink(f"/proc/{self.proc.pid}/ns/net")
        except OSError:
            return None

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", "-t", str(self.proc.pid), "-n", "--", *argv]

    def run(self, argv: list[str], check: bool = False, **kw: Any) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=60,
                                **kw)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv!r} failed: {result.stderr}")
        return result

    def nft(self, *args: str) -> str:
        return self.run([NFT, *args], check=True).stdout

    def firewall(self, **kw: Any) -> NftFirewall:
        return NftFirewall(nft=self.argv(NFT), **kw)

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn on a short-lived thread that joined the namespace (sockets made there
        stay there)."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/proc/{self.proc.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def close(self) -> None:
        # unshare --fork ignores SIGTERM while it waits; --kill-child takes the sleeper
        # with it when unshare itself is killed.
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def ns() -> Iterator[NetNs]:
    n = NetNs()
    try:
        yield n
    finally:
        n.close()


NOW = time.time()


def ban(network: str, left: float = 600.0, strikes: int = 1) -> Ban:
    return Ban(network=network, duration=left, until=NOW + left, strikes=strikes, reason="t")


def test_setup_is_idempotent_keeps_elements_and_never_touches_other_tables(ns: NetNs):
    ns.run([NFT, "-f", "-"], check=True, input="""
table inet other {
    set s { type ipv4_addr; elements = { 192.0.2.1 }; }
    chain c { type filter hook input priority 0; policy accept; tcp dport 22 accept; }
}
table ip sshguardd { chain x { }; }
""")
    before = ns.nft("list", "table", "inet", "other")
    fw = ns.firewall(ports=(22, 2222))
    assert not fw.exists()
    fw.setup()
    assert fw.exists()
    fw.add([ban("198.51.100.7/32")], NOW)
    fw.setup()  # again: nothing lost, nothing doubled
    fw.setup()
    assert fw.contains("198.51.100.7/32")
    table = json.loads(ns.nft("-j", "list", "table", "inet", "sshguardd"))["nftables"]
    sets = {i["set"]["name"]: i["set"] for i in table if "set" in i}
    assert set(sets) == {"addr4", "addr6", "net4", "net6"}
    assert sets["addr4"]["flags"] == ["timeout"] and sets["addr6"]["type"] == "ipv6_addr"
    assert set(sets["net6"]["flags"]) == {"interval", "timeout"}
    chains = [i["chain"] for i in table if "chain" in i]
    assert len(chains) == 1 and chains[0]["hook"] == "input" and chains[0]["policy"] == "accept"
    rules = [i["rule"] for i in table if "rule" in i]
    assert len(rules) == 4  # flushed and rewritten, not appended
    assert all(r["expr"][-1] == {"drop": None} for r in rules)
    assert ns.nft("list", "table", "inet", "other") == before
    assert "chain x" in ns.nft("list", "table", "ip", "sshguardd")  # same name, other family


def test_add_sets_kernel_timeouts_to_the_remaining_time(ns: NetNs):
    fw = ns.firewall()
    fw.setup()
    bans = [ban("198.51.100.1/32", 600), ban("2001:db8:1:2::/64", 3600),
            ban("203.0.113.0/24", 120), ban("2001:db8:ff00::/40", 7200),
            Ban("198.51.100.99/32", 600, NOW - 1)]  # already over: skipped
    fw.add(bans, NOW)
    for b in bans[:4]:
        left = fw.expires(b.network)
        assert left is not None and b.until - NOW - 3 <= left <= b.until - NOW + 1, b
    assert not fw.contains("198.51.100.99/32")
    # the hash sets hold the network address, the interval sets the prefix
    assert "2001:db8:1:2::" in ns.nft("list", "set", "inet", "sshguardd", "addr6")
    assert "203.0.113.0/24" in ns.nft("list", "set", "inet", "sshguardd", "net4")


def test_the_kernel_expires_bans_by_itself(ns: NetNs):
    fw = ns.firewall()
    fw.setup()
    fw.add([Ban("198.51.100.2/32", 1, time.time() + 1)], time.time())
    assert fw.contains("198.51.100.2/32")
    wait_for(lambda: not fw.contains("198.51.100.2/32"), timeout=10, what="kernel expiry")


def test_replace_changes_the_timeout_of_a_live_ban_and_remove_is_lenient(ns: NetNs):
    fw = ns.firewall()
    fw.setup()
    fw.add([ban("198.51.100.3/32", 600), ban("192.0.2.0/28", 600)], NOW)
    fw.add([ban("198.51.100.3/32", 600), ban("192.0.2.0/28", 600)], NOW)  # re-add: no error
    fw.replace([ban("198.51.100.3/32", 86400), ban("192.0.2.0/28", 60)], NOW)
    assert fw.expires("198.51.100.3/32") > 86000
    assert fw.expires("192.0.2.0/28") <= 60
    fw.replace([ban("198.51.100.4/32", 60)], NOW)  # not there before: plain add
    assert fw.contains("198.51.100.4/32")
    fw.remove(["198.51.100.3/32", "198.51.100.250/32", "192.0.2.0/28", "2001:db8::/64"])
    assert not fw.contains("198.51.100.3/32") and not fw.contains("192.0.2.0/28")
    assert fw.contains("198.51.100.4/32")


def test_restore_after_nftables_restart_and_over_stale_elements(ns: NetNs):
    fw = ns.firewall()
    fw.setup()
    fw.add([ban("198.51.100.5/32"), ban("198.51.100.6/32")], NOW)
    store_bans = [ban("198.51.100.6/32", 300), ban("2001:db8:2::/64", 900),
                  ban("10.0.0.0/8", 900), ban("10.1.0.0/16", 900)]  # nested: collapsed
    fw.restore(store_bans, NOW)
    assert not fw.contains("198.51.100.5/32")  # unbanned while we were down
    assert fw.expires("198.51.100.6/32") <= 300
    assert fw.contains("2001:db8:2::/64") and fw.contains("10.0.0.0/8")
    # `systemctl restart nftables` runs `flush ruleset`: our table is gone
    ns.nft("flush", "ruleset")
    assert not fw.exists()
    fw.setup()
    fw.restore(store_bans, NOW)
    assert fw.contains("2001:db8:2::/64") and fw.expires("198.51.100.6/32") <= 300


def test_large_batches_are_chunked_into_few_transactions(ns: NetNs):
    fw = ns.firewall(chunk=1000)
    fw.setup()
    calls = fw.calls
    bans = [ban(f"10.{i >> 8 & 255}.{i & 255}.1/32") for i in range(2500)]
    bans += [ban(f"2001:db8:{i:x}::/64") for i in range(300)]
    fw.add(bans, NOW)
    assert fw.calls - calls == 3  # 2800 elements, 1000 per transaction
    for b in (bans[0], bans[1234], bans[2499], bans[-1]):
        assert fw.contains(b.network)


def test_setup_repairs_a_damaged_table(ns: NetNs):
    ns.run([NFT, "-f", "-"], check=True, input=(
        "table inet sshguardd { set addr4 { type ipv6_addr; }; }\n"))  # wrong type
    fw = ns.firewall()
    fw.setup()
    assert "ipv4_addr" in ns.nft("list", "set", "inet", "sshguardd", "addr4")
    ns.nft("flush", "chain", "inet", "sshguardd", "input")  # someone removed our rules
    fw.setup()
    assert ns.nft("list", "chain", "inet", "sshguardd", "input").count("drop") == 4


def test_failed_nft_call_quotes_argv_payload_and_stderr(ns: NetNs):
    fw = ns.firewall()  # no setup: the table does not exist
    with pytest.raises(FirewallError) as info:
        fw.add([ban("198.51.100.8/32")], NOW)
    err = info.value
    assert err.argv[-3:] == ["-j", "-f", "-"] and err.argv[0] == "nsenter"
    assert "198.51.100.8" in err.payload and json.loads(err.payload)["nftables"]
    assert "No such file or directory" in err.stderr
    text = str(err)
    assert "nsenter" in text and "198.51.100.8" in text and "No such file" in text
    assert fw.failures == 1
    broken = NftFirewall(nft=["/nonexistent/nft"])
    with pytest.raises(FirewallError, match="nonexistent"):
        broken.setup()


def _dropped(ns: NetNs, family: int, src: str, dst: str, port: int) -> bool:
    # A dropped SYN is only ever seen as a timeout; on loopback an accepted one is answered
    # at once, so one second is plenty (connections expected to succeed get ten).
    return not _connects(ns, family, src, dst, port, timeout=1.0)


def _listener(ns: NetNs, family: int, addr: str) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.bind((addr, 0))
        s.listen(16)
        return s
    return ns.call(make)


def _connects(ns: NetNs, family: int, src: str, dst: str, port: int,
              timeout: float = 10.0) -> bool:
    def attempt() -> bool:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.bind((src, 0))
            try:
                s.connect((dst, port))
            except TimeoutError:
                return False
            return True
    return ns.call(attempt)


def test_banned_source_is_dropped_other_sources_connect(ns: NetNs):
    for addr in ("2001:db8:1::2", "2001:db8:2::3"):
        ns.run(["ip", "-6", "addr", "add", f"{addr}/128", "dev", "lo", "nodad"], check=True)
    lst4 = _listener(ns, socket.AF_INET, "127.0.0.1")
    lst6 = _listener(ns, socket.AF_INET6, "2001:db8:1::2")
    try:
        port4, port6 = lst4.getsockname()[1], lst6.getsockname()[1]
        fw = ns.firewall(ports=(port4, port6))
        fw.setup()
        fw.add([ban("127.0.0.2/32"), ban("2001:db8:1::/64")], NOW)
        assert _connects(ns, socket.AF_INET, "127.0.0.3", "127.0.0.1", port4)
        assert _dropped(ns, socket.AF_INET, "127.0.0.2", "127.0.0.1", port4)
        # the /64 is banned: its other addresses too; another /64 is not
        assert _dropped(ns, socket.AF_INET6, "2001:db8:1::2", "2001:db8:1::2", port6)
        assert _connects(ns, socket.AF_INET6, "2001:db8:2::3", "2001:db8:1::2", port6)
        fw.remove(["127.0.0.2/32"])
        assert _connects(ns, socket.AF_INET, "127.0.0.2", "127.0.0.1", port4)
    finally:
        lst4.close()
        lst6.close()


def test_configured_ipv4_prefix_masks_the_source(ns: NetNs):
    lst = _listener(ns, socket.AF_INET, "127.0.0.1")
    try:
        port = lst.getsockname()[1]
        fw = ns.firewall(ports=(port,), ipv4_prefix=24)
        fw.setup()
        fw.add([ban("127.0.5.0/24")], NOW)
        assert "127.0.5.0" in ns.nft("list", "set", "inet", "sshguardd", "addr4")
        assert _dropped(ns, socket.AF_INET, "127.0.5.77", "127.0.0.1", port)
        assert _connects(ns, socket.AF_INET, "127.0.6.77", "127.0.0.1", port)
    finally:
        lst.close()


def test_a_failing_batch_in_a_pipeline_raises_and_leaves_no_process(ns: NetNs):
    fw = ns.firewall(chunk=2)
    fw.setup()
    fw.add([ban("10.0.0.0/8")], NOW)
    bans = [ban(f"198.51.100.{i}/32") for i in range(1, 6)] + [ban("10.1.0.0/16")]
    with pytest.raises(FirewallError) as info:
        fw.add(bans, NOW)  # the last transaction overlaps 10.0.0.0/8 in the kernel
    assert "10.1.0.0" in info.value.payload and "198.51.100.1" not in info.value.payload
    # batches of two: the first two transactions went in, the third (198.51.100.5 and the
    # overlapping range) failed as a whole
    assert [fw.contains(b.network) for b in bans[:5]] == [True] * 4 + [False]
    assert fw.failures == 1
