"""PerSourcePenalties: the listener's lines (golden data), `sshd -T`'s settings as
OpenSSH 10.0p2 prints them, the book of penalties in force and which of them a restart of
sshd carries over as bans (issue 15 part 4). The daemon test is test_penalties_daemon.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sshguardd.bans.penalties import CARRIED, Penalty, PenaltyBook, carry, exempt_gaps
from sshguardd.contracts import Ban, LogBatch, LogRecord
from sshguardd.detect import classify
from sshguardd.detect.penalties import PenaltySettings, parse_line, parse_settings

GOLDEN = Path(__file__).parent / "data" / "penalty_golden.jsonl"
CASES = [json.loads(line) for line in GOLDEN.read_text().splitlines() if line.strip()]
T0 = 1_700_000_000.0
FAILED = "penalty: failed authentication"

# `sshd -T` of Debian 13's sshd (OpenSSH_10.0p2), defaults and with -o options, as run.
SSHD_T_DEFAULT = {
    "persourcepenalties": "crash:90 authfail:5 noauth:1 grace-exceeded:10 refuseconnection:10 "
                          "max:600 min:15 max-sources4:65536 max-sources6:65536 "
                          "overflow:permissive overflow6:permissive",
    "persourcenetblocksize": "32:128",
    "persourcepenaltyexemptlist": "none",
}
SSHD_T_SET = {
    "persourcepenalties": "crash:90 authfail:7 noauth:1 grace-exceeded:10 refuseconnection:10 "
                          "max:120 min:3 max-sources4:65536 max-sources6:65536 "
                          "overflow:permissive overflow6:permissive",
    "persourcenetblocksize": "24:64",
    "persourcepenaltyexemptlist": "10.0.0.0/8,192.0.2.1",
}


@pytest.mark.parametrize("case", CASES, ids=[c["message"][:60] for c in CASES])
def test_golden_penalty_lines(case):
    got = parse_line(case["message"])
    want = case["expect"]
    if want is None:
        assert got is None, case["source"]
        return
    assert got is not None, case["source"]
    assert (got.address, got.network, got.seconds, got.active, got.reason) == (
        want["address"], want["network"], want["seconds"], want["active"], want["reason"])


def test_srclimit_lines_are_no_failure_events():
    # sshd logs its own line for the failure that earned the penalty; the penalty line
    # must not count it a second time.
    for case in CASES:
        if case["message"].startswith("srclimit_penalise: "):
            assert classify(case["message"]) is None, case["message"]


def test_settings_from_sshd_T_as_10_0p2_prints_them():
    s = parse_settings(SSHD_T_DEFAULT)
    assert s is not None and s.enabled
    assert (s.minimum, s.maximum, s.ipv4_bits, s.ipv6_bits, s.exempt) == (15, 600, 32, 128, ())
    assert s.per_offence(FAILED.removeprefix("penalty: ")) == 5
    s = parse_settings(SSHD_T_SET)
    assert s is not None
    assert (s.minimum, s.maximum, s.ipv4_bits, s.ipv6_bits) == (3, 120, 24, 64)
    assert s.exempt == ("10.0.0.0/8", "192.0.2.1")
    assert s.per_offence("failed authentication") == 7
    off = parse_settings({"persourcepenalties": "no"})
    assert off is not None and not off.enabled
    assert parse_settings({"permitrootlogin": "no"}) is None  # before 9.8: no such thing


def rec(message: str, t: float) -> LogRecord:
    return LogRecord(message, t, pid=1)


def test_book_takes_the_logged_end_and_estimates_from_drop_lines():
    book = PenaltyBook()
    book.observe([
        rec(f"srclimit_penalise: ipv4: new 192.0.2.7/32 active penalty of 30 seconds for {FAILED}", T0),
        rec(f"drop connection #0 from [192.0.2.7]:1 on [192.0.2.1]:22 {FAILED}", T0 + 5),
        rec(f"drop connection #0 from [198.51.100.8]:1 on [192.0.2.1]:22 {FAILED}", T0 + 10),
        rec(f"srclimit_penalise: ipv4: new 192.0.2.9/32 deferred penalty of 4 seconds for {FAILED}",
            T0),
    ])
    got = {p.network: p for p in book.in_force(T0 + 10)}
    assert got["192.0.2.7/32"] == Penalty("192.0.2.7/32", T0 + 30, "failed authentication", True)
    # Only a drop line: max(min 15, authfail 5) from the drop line, not logged.
    assert got["198.51.100.8/32"] == Penalty("198.51.100.8/32", T0 + 25,
                                             "failed authentication", False)
    assert "192.0.2.9/32" not in got  # deferred: sshd does not refuse it yet
    assert [p.network for p in book.in_force(T0 + 26)] == ["192.0.2.7/32"]


def test_book_masks_drop_lines_to_sshds_netblock_and_forgets_on_a_new_listener():
    book = PenaltyBook()
    book.settings = parse_settings(SSHD_T_SET)
    book.observe([rec(f"drop connection #0 from [192.0.2.77]:1 on [192.0.2.1]:22 {FAILED}", T0),
                  rec(f"drop connection #1 from [2001:db8:0:0:1::5]:1 on [::1]:22 {FAILED}", T0)])
    got = {p.network: p.until for p in book.in_force(T0)}
    assert got == {"192.0.2.0/24": T0 + 7, "2001:db8::/64": T0 + 7}  # authfail 7 > min 3
    book.observe([rec("Server listening on 0.0.0.0 port 22.", T0 + 1)])
    assert book.in_force(T0 + 1) == []


def test_book_is_bounded():
    book = PenaltyBook(cap=256)
    book.observe(rec(f"srclimit_penalise: ipv4: new 10.0.{i // 256}.{i % 256}/32 active "
                     f"penalty of {100 + i} seconds for {FAILED}", T0) for i in range(2000))
    assert len(book) <= 256
    # The soonest to end went first: the latest (longest) are kept.
    assert "10.0.7.207/32" in {p.network for p in book.in_force(T0)}


def test_carry_spares_allow_list_admin_protection_and_longer_bans():
    p = [Penalty("192.0.2.7/32", T0 + 40, "failed authentication", True),
         Penalty("127.0.0.9/32", T0 + 40, "failed authentication", True),
         Penalty("192.0.2.50/32", T0 + 40, "failed authentication", True),
         Penalty("192.0.2.60/32", T0 + 40, "failed authentication", True),
         Penalty("192.0.2.61/32", T0 + 40, "failed authentication", True),
         Penalty("2001:db8::66/128", T0 + 40, "failed authentication", False),
         Penalty("192.0.2.70/32", T0 + 10.5, "failed authentication", True)]
    active = [Ban("192.0.2.60/32", 600, T0 + 500, 1, "5 failures"),   # longer: kept
              Ban("192.0.2.61/32", 600, T0 + 20, 1, "5 failures"),    # shorter: lengthened
              Ban("2001:db8::/64", 600, T0 + 900, 1, "5 failures")]   # covers the /128
    bans = carry(p, T0 + 10, allow=("127.0.0.0/8", "::1/128"),
                 logged_in={"192.0.2.50/32": T0}, active=active)
    assert [(b.network, b.duration, b.until, b.strikes) for b in bans] == [
        ("192.0.2.7/32", 30, T0 + 40, 0), ("192.0.2.61/32", 30, T0 + 40, 0)]
    assert bans[0].reason == f"{CARRIED} (failed authentication)"


def test_carry_estimated_end_says_so():
    [b] = carry([Penalty("192.0.2.7/32", T0 + 40, "failed authentication", False)], T0,
                allow=(), logged_in=(), active=())
    assert b.reason == f"{CARRIED} (failed authentication, end estimated from sshd's drop lines)"


def test_exempt_gaps_reports_never_ban_networks_sshd_may_still_refuse():
    assert exempt_gaps(("127.0.0.0/8", "::1/128", "10.1.0.0/16"), ("10.0.0.0/8", "::1")) == [
        "127.0.0.0/8"]
    assert exempt_gaps(("192.0.2.0/24",), ("192.0.2.*",)) == ["192.0.2.0/24"]  # not judged
    assert exempt_gaps((), PenaltySettings().exempt) == []


def test_a_policy_ban_replaces_a_carried_one(tmp_path):
    """A carried ban is no decision of ours: a ban the policy decides for the same network
    while it lasts must replace it (before, the store's 'already banned' test swallowed
    the real ban and the network went free when the short one ended)."""
    from daemon_helpers import in_process_parts
    from sshguardd import config
    from sshguardd.daemon.ban_engine import BanEngine
    from sshguardd.effects.nft_dryrun import DryRunFirewall

    cfg = config.Config()
    parts = in_process_parts(tmp_path)
    store = parts.store()
    fw = DryRunFirewall()
    engine = BanEngine(cfg, store, fw, parts.metrics, parts.alerts)
    engine.restore(T0)
    carried = Ban("192.0.2.7/32", 30, T0 + 30, 0, f"{CARRIED} (failed authentication)")
    store.add_bans([carried], history=False)
    engine.carried[carried.network] = carried.until
    assert store.history(0) == {}  # no strike
    lines = [f"Failed password for root from 192.0.2.7 port {4000 + i} ssh2" for i in range(5)]
    result = engine.on_batch(LogBatch(tuple(LogRecord(m, T0 + 1 + i, pid=100 + i)
                                            for i, m in enumerate(lines))), T0 + 6)
    assert [b.network for b in result.bans] == ["192.0.2.7/32"]
    [ban] = store.active_bans(T0 + 6)
    assert ban.strikes == 1 and ban.until == pytest.approx(T0 + 5 + 600)
    assert "192.0.2.7/32" not in engine.carried
    # restore() knows carried bans again from the store after a restart of sshguardd.
    store.add_bans([Ban("192.0.2.8/32", 30, T0 + 30, 0, f"{CARRIED} (x)")], history=False)
    engine.restore(T0 + 7)
    assert engine.carried == {"192.0.2.8/32": T0 + 30}


class _Carry:
    """Stands in for PenaltyCarry's two callbacks (what RestartWatch calls is the seam)."""

    def __init__(self) -> None:
        self.restarts = 0
        self.settings: list[dict[str, str]] = []

    def restarted(self) -> list[Ban]:
        self.restarts += 1
        return []

    def settings_seen(self, sshd_t: dict[str, str]) -> None:
        self.settings.append(sshd_t)


def test_restart_watch_carries_after_every_restart_even_a_failed_one():
    # A failed restart command may still have ended the old listener (and its penalties):
    # the carry runs anyway, and the repair still sees the failure.
    from sshguardd.daemon.penalty_carry import RestartWatch
    from sshguardd.effects.sshd import ServiceError, Sshd

    seen = _Carry()
    ok = RestartWatch(Sshd(restart=("/bin/true",)), seen)  # type: ignore[arg-type]
    ok.restart()
    assert seen.restarts == 1 and ok.restart_argv == ("/bin/true",)
    bad = RestartWatch(Sshd(restart=("/bin/false",)), seen)  # type: ignore[arg-type]
    with pytest.raises(ServiceError):
        bad.restart()
    assert seen.restarts == 2
    assert bad.timeout == 30.0  # everything else is the wrapped runner's
