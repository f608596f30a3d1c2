"""The ban policy, pure: hand-made records and events, time passed in as data."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sshguardd.bans.policy import _CONN, MAX_CONNECTIONS, BanPolicy
from sshguardd.config import BanConfig, WeightsConfig
from sshguardd.contracts import Ban, Event, Kind, LogRecord
from sshguardd.detect import classify

T0 = 1_700_000_000.0

# What one failed password as an invalid user logged on OpenSSH 9.2 with PAM (TESTBED.md).
PAM_ATTEMPT = [
    "Invalid user evil from {a} port {p}",
    "pam_unix(sshd:auth): check pass; user unknown",
    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={a}",
    "Failed password for invalid user evil from {a} port {p} ssh2",
    "Connection closed by invalid user evil {a} port {p} [preauth]",
]


def feed(policy: BanPolicy, message: str, *, t: float, pid: int | None) -> Ban | None:
    """Classify with the real classifier, as the daemon does, and observe."""
    event = classify(message)
    if event is None:
        return None
    return policy.observe(LogRecord(message, time=t, pid=pid), event)


def obs(policy: BanPolicy, kind: Kind, host: str, *, t: float, pid: int | None = None,
        message: str = "x", user: str | None = None) -> Ban | None:
    return policy.observe(LogRecord(message, time=t, pid=pid), Event(kind, host, user))


def pam_connection(policy: BanPolicy, addr: str, pid: int, t: float) -> list[Ban]:
    bans = []
    for i, line in enumerate(PAM_ATTEMPT):
        ban = feed(policy, line.format(a=addr, p=40000 + pid), t=t + i * 0.01, pid=pid)
        if ban:
            bans.append(ban)
    return bans


# -- counting attempts, not lines ------------------------------------------------------------

def test_five_line_pam_attempt_counts_once_and_five_attempts_ban():
    policy = BanPolicy(BanConfig())
    for n in range(4):
        assert pam_connection(policy, "203.0.113.9", pid=1000 + n, t=T0 + n * 3) == []
    bans = pam_connection(policy, "203.0.113.9", pid=1004, t=T0 + 12)
    assert len(bans) == 1
    ban = bans[0]
    assert ban.network == "203.0.113.9/32"
    assert ban.duration == 600.0 and ban.strikes == 1
    assert ban.until == pytest.approx(T0 + 12 + 600, abs=0.1)
    assert "5 failed attempts" in ban.reason


def test_max_retry_counts_attempts_with_real_classifier_for_several_max_retry():
    for max_retry in (1, 2, 3, 7):
        policy = BanPolicy(BanConfig(max_retry=max_retry))
        banned_at = None
        for n in range(10):
            if pam_connection(policy, "198.51.100.1", pid=500 + n, t=T0 + n):
                banned_at = n + 1
                break
        assert banned_at == max_retry


def test_interleaved_parallel_connections_are_told_apart_by_pid():
    """Attackers run connections in parallel (PAM's fail delay is ~2 s): their lines
    interleave in the journal, and each connection is still one attempt."""
    policy = BanPolicy(BanConfig(max_retry=5))
    a = "2001:db8:7::99"
    bans = []
    for line in PAM_ATTEMPT:
        for pid in range(300, 305):
            ban = feed(policy, line.format(a=a, p=50000 + pid), t=T0, pid=pid)
            if ban:
                bans.append((line, pid, ban))
    # the fifth connection's first line (Invalid user) is the fifth attempt
    assert [(line, pid) for line, pid, _ in bans] == [(PAM_ATTEMPT[0], 304)]
    assert bans[0][2].network == "2001:db8:7::/64"


def test_several_passwords_in_one_connection_count_each():
    policy = BanPolicy(BanConfig())
    a = "192.0.2.50"
    assert feed(policy, f"Invalid user bob from {a} port 1", t=T0, pid=7) is None
    for i in range(3):
        assert feed(policy, f"Failed password for invalid user bob from {a} port 1 ssh2",
                    t=T0 + i, pid=7) is None
    # 3 attempts so far; a second connection with two more reaches 5
    assert feed(policy, f"Failed password for root from {a} port 2 ssh2", t=T0 + 5, pid=8) is None
    ban = feed(policy, f"Failed password for root from {a} port 2 ssh2", t=T0 + 6, pid=8)
    assert ban is not None and ban.network == f"{a}/32"


def test_invalid_user_without_password_still_counts_one():
    policy = BanPolicy(BanConfig())
    a = "192.0.2.51"
    for pid in range(100, 104):
        assert feed(policy, f"Invalid user u{pid} from {a} port {pid}", t=T0, pid=pid) is None
        assert feed(policy, f"Connection closed by invalid user u{pid} {a} port {pid} [preauth]",
                    t=T0, pid=pid) is None
    assert feed(policy, f"Invalid user last from {a} port 9", t=T0, pid=104) is not None


def test_probe_only_connection_counts_once_with_its_weight():
    policy = BanPolicy(BanConfig())  # probes weigh 0.5: ten probe connections ban
    a = "192.0.2.60"
    for pid in range(1, 10):
        # a kex failure and a pre-auth disconnect from the same connection: one probe
        assert obs(policy, Kind.KEX_FAILURE, a, t=T0 + pid, pid=pid) is None
        assert obs(policy, Kind.PREAUTH_DISCONNECT, a, t=T0 + pid, pid=pid) is None
        assert obs(policy, Kind.PROTOCOL_ERROR, a, t=T0 + pid, pid=pid) is None
    ban = obs(policy, Kind.TIMEOUT, a, t=T0 + 10, pid=99)
    assert ban is not None
    assert "5 failed attempts" in ban.reason


def test_probe_after_auth_attempt_adds_nothing():
    policy = BanPolicy(BanConfig(max_retry=2, weights=WeightsConfig(preauth_disconnect=5.0)))
    a = "192.0.2.61"
    assert obs(policy, Kind.BAD_PASSWORD, a, t=T0, pid=1) is None
    # A heavy probe weight does not apply: the connection already made an attempt.
    assert obs(policy, Kind.PREAUTH_DISCONNECT, a, t=T0, pid=1) is None
    # ...but on its own, a probe connection has that weight.
    assert obs(policy, Kind.PREAUTH_DISCONNECT, a, t=T0, pid=2) is not None


def test_failed_public_keys_never_ban_by_default():
    policy = BanPolicy(BanConfig())
    a = "192.0.2.62"
    for pid in range(50):
        for _ in range(6):
            assert obs(policy, Kind.BAD_KEY, a, t=T0 + pid, pid=pid) is None
        # the client offered keys, none fit, it gave up: not a probe either
        assert obs(policy, Kind.PREAUTH_DISCONNECT, a, t=T0 + pid, pid=pid) is None
    # MAX_AUTH_TRIES (weight 1) is a refusal floor: each such connection counts one.
    policy2 = BanPolicy(BanConfig())
    bans = [obs(policy2, Kind.MAX_AUTH_TRIES, a, t=T0, pid=p) for p in range(5)]
    assert bans[:4] == [None] * 4 and bans[4] is not None


def test_pam_lines_are_not_attempts_even_if_classified():
    policy = BanPolicy(BanConfig(max_retry=1))
    a = "192.0.2.63"
    msg = f"error: PAM: Authentication failure for root from {a}"
    assert classify(msg) is not None  # the classifier does see a failure here
    assert feed(policy, msg, t=T0, pid=1) is None
    assert feed(policy, f"Failed keyboard-interactive/pam for root from {a} port 2 ssh2",
                t=T0, pid=1) is not None


def test_a_user_name_cannot_make_its_failure_look_like_a_pam_line():
    policy = BanPolicy(BanConfig(max_retry=1))
    ban = feed(policy, "Failed password for invalid user pam_(sshd:auth) PAM: from 192.0.2.66 "
               "port 4 ssh2", t=T0, pid=9)
    assert ban is not None and ban.network == "192.0.2.66/32"


def test_lines_without_pid_are_each_their_own_connection():
    policy = BanPolicy(BanConfig(max_retry=2))
    a = "192.0.2.64"
    assert feed(policy, f"Invalid user x from {a} port 1", t=T0, pid=None) is None
    assert feed(policy, f"Failed password for invalid user x from {a} port 1 ssh2",
                t=T0, pid=None) is not None


def test_penalty_lines_from_the_listener_count_separately():
    policy = BanPolicy(BanConfig(max_retry=3))
    listener = 1  # all penalty lines come from sshd's listener process
    bans = [feed(policy, f"drop connection #{i} from [192.0.2.65]:{1000 + i} on [192.0.2.1]:22 "
                 "penalty: failed authentication", t=T0 + i, pid=listener) for i in range(3)]
    assert bans[:2] == [None, None] and bans[2] is not None


# -- windows, networks, allow-list -----------------------------------------------------------

def test_attempts_outside_find_time_do_not_add_up():
    cfg = BanConfig(find_time=60, max_retry=3)
    policy = BanPolicy(cfg)
    a = "192.0.2.70"
    assert obs(policy, Kind.BAD_PASSWORD, a, t=T0, pid=1) is None
    assert obs(policy, Kind.BAD_PASSWORD, a, t=T0 + 30, pid=2) is None
    assert obs(policy, Kind.BAD_PASSWORD, a, t=T0 + 61, pid=3) is None  # the first expired
    assert obs(policy, Kind.BAD_PASSWORD, a, t=T0 + 85, pid=4) is not None  # 30, 61, 85


def test_ipv6_aggregated_to_64_and_ipv4_to_32():
    policy = BanPolicy(BanConfig(max_retry=3))
    assert obs(policy, Kind.BAD_PASSWORD, "2001:db8:1:2::1", t=T0, pid=1) is None
    assert obs(policy, Kind.BAD_PASSWORD, "2001:db8:1:2:ffff::9", t=T0, pid=2) is None
    assert obs(policy, Kind.BAD_PASSWORD, "2001:db8:1:3::1", t=T0, pid=3) is None  # other /64
    ban = obs(policy, Kind.BAD_PASSWORD, "2001:db8:1:2:abcd::7", t=T0, pid=4)
    assert ban is not None and ban.network == "2001:db8:1:2::/64"
    assert policy.network_of("192.0.2.9") == "192.0.2.9/32"
    assert policy.network_of("::ffff:192.0.2.9") == "192.0.2.9/32"
    assert policy.network_of("2001:db8::1") == "2001:db8::/64"


def test_configurable_prefixes():
    policy = BanPolicy(BanConfig(ipv4_prefix=24, ipv6_prefix=48, max_retry=2))
    assert policy.network_of("192.0.2.200") == "192.0.2.0/24"
    assert policy.network_of("2001:db8:7:8::1") == "2001:db8:7::/48"
    assert obs(policy, Kind.BAD_PASSWORD, "192.0.2.1", t=T0, pid=1) is None
    ban = obs(policy, Kind.BAD_PASSWORD, "192.0.2.254", t=T0, pid=2)
    assert ban is not None and ban.network == "192.0.2.0/24"


def test_allow_list_loopback_by_default_and_custom_cidrs():
    policy = BanPolicy(BanConfig(max_retry=1, allow=("127.0.0.0/8", "::1", "10.0.0.0/8",
                                                       "2001:db8:aaaa::/48")))
    for host in ("127.0.0.1", "127.9.9.9", "::1", "10.200.0.1", "::ffff:10.0.0.1",
                 "2001:db8:aaaa:1::5"):
        assert obs(policy, Kind.BAD_PASSWORD, host, t=T0, pid=1) is None
        assert policy.network_of(host) is None
    assert policy.tracked == 0
    assert obs(policy, Kind.BAD_PASSWORD, "11.0.0.1", t=T0, pid=1) is not None
    default = BanPolicy(BanConfig(max_retry=1))
    assert obs(default, Kind.BAD_PASSWORD, "127.0.0.2", t=T0, pid=1) is None


def test_a_prefix_holding_an_allowed_address_is_never_banned_whole():
    policy = BanPolicy(BanConfig(max_retry=2, ipv4_prefix=24,
                                 allow=("2001:db8::1", "192.0.2.10", "127.0.0.0/8")))
    assert policy.network_of("2001:db8::1") is None
    assert policy.network_of("2001:db8::5") == "2001:db8::5/128"
    assert policy.network_of("2001:db8:0:1::5") == "2001:db8:0:1::/64"
    assert policy.network_of("192.0.2.7") == "192.0.2.7/32"
    assert policy.network_of("198.51.100.7") == "198.51.100.0/24"
    # neighbours of the admin count one by one, not together
    assert obs(policy, Kind.BAD_PASSWORD, "2001:db8::5", t=T0, pid=1) is None
    assert obs(policy, Kind.BAD_PASSWORD, "2001:db8::6", t=T0, pid=2) is None
    ban = obs(policy, Kind.BAD_PASSWORD, "2001:db8::5", t=T0, pid=3)
    assert ban is not None and ban.network == "2001:db8::5/128"
    assert obs(policy, Kind.BAD_PASSWORD, "2001:db8::5", t=T0 + 1, pid=4) is None  # banned
    assert policy.manual_ban("2001:db8::9", 60, T0).network == "2001:db8::9/128"
    policy.forget("2001:db8::5/128")
    assert obs(policy, Kind.BAD_PASSWORD, "2001:db8::5", t=T0 + 2, pid=5) is None
    # an all-zero host part stays distinct from the prefix it would aggregate to
    assert policy.network_of("2001:db8::") == "2001:db8::/128"


def test_host_names_are_never_counted():
    policy = BanPolicy(BanConfig(max_retry=1))
    assert obs(policy, Kind.BAD_PASSWORD, "attacker.example.com", t=T0) is None
    assert policy.network_of("attacker.example.com") is None
    assert policy.tracked == 0


def test_spoofed_address_in_user_name_blames_the_real_source():
    policy = BanPolicy(BanConfig(max_retry=1))
    ban = feed(policy, "Invalid user evil from 10.9.9.9 port 22 from 192.0.2.80 port 38470",
               t=T0, pid=3)
    assert ban is not None and ban.network == "192.0.2.80/32"


# -- ban time, escalation ---------------------------------------------------------------

def ban_now(policy: BanPolicy, host: str, t: float) -> Ban:
    for pid in range(1, 100):
        ban = obs(policy, Kind.BAD_PASSWORD, host, t=t, pid=pid)
        if ban:
            return ban
    raise AssertionError("no ban")


def test_escalation_doubles_and_stops_at_the_ceiling():
    cfg = BanConfig(ban_time=600, escalation_factor=2, max_ban_time=3000)
    policy = BanPolicy(cfg)
    a = "192.0.2.90"
    durations, strikes = [], []
    t = T0
    for _ in range(5):
        ban = ban_now(policy, a, t)
        durations.append(ban.duration)
        strikes.append(ban.strikes)
        t = ban.until + 1  # next relapse after the ban ran out
    assert durations == [600, 1200, 2400, 3000, 3000]
    assert strikes == [1, 2, 3, 4, 5]


def test_escalation_never_overflows():
    policy = BanPolicy(BanConfig(escalation_factor=100, max_ban_time="1w"))
    assert policy.duration_for(5000) == 7 * 86400


def test_history_from_the_store_escalates_and_old_history_is_forgotten():
    cfg = BanConfig(history_time=86400)
    recent = BanPolicy(cfg, history={"192.0.2.91/32": [T0 - 3600, T0 - 7200]})
    assert ban_now(recent, "192.0.2.91", T0).strikes == 3
    assert recent.duration_for(3) == 2400
    old = BanPolicy(cfg, history={"192.0.2.91/32": [T0 - 90000]})
    ban = ban_now(old, "192.0.2.91", T0)
    assert ban.strikes == 1 and ban.duration == 600


def test_no_rebans_while_banned_then_counting_restarts():
    policy = BanPolicy(BanConfig(max_retry=2))
    a = "192.0.2.92"
    first = ban_now(policy, a, T0)
    # lines already in flight when the ban landed neither re-ban nor escalate
    for pid in range(10):
        assert obs(policy, Kind.BAD_PASSWORD, a, t=T0 + 1, pid=100 + pid) is None
    assert obs(policy, Kind.BAD_PASSWORD, a, t=first.until + 1, pid=200) is None
    second = obs(policy, Kind.BAD_PASSWORD, a, t=first.until + 2, pid=201)
    assert second is not None and second.strikes == 2


def test_bans_active_at_start_are_not_banned_again():
    active = [Ban("192.0.2.94/32", 600, T0 + 300, 1, "r"), Ban("198.51.100.0/24", 600, T0 + 300)]
    policy = BanPolicy(BanConfig(max_retry=1), history={"192.0.2.94/32": [T0 - 300]},
                       active=active)
    assert obs(policy, Kind.BAD_PASSWORD, "192.0.2.94", t=T0, pid=1) is None
    assert obs(policy, Kind.BAD_PASSWORD, "198.51.100.9", t=T0, pid=1) is None  # in the range
    again = obs(policy, Kind.BAD_PASSWORD, "192.0.2.94", t=T0 + 301, pid=2)
    assert again is not None and again.strikes == 2


def test_disabled_bans_count_but_never_ban():
    policy = BanPolicy(BanConfig(enabled=False, max_retry=1))
    assert obs(policy, Kind.BAD_PASSWORD, "192.0.2.93", t=T0, pid=1) is None
    assert policy.tracked == 1


# -- admin protection ------------------------------------------------------------------

def test_admin_who_logged_in_is_not_banned_for_mistyped_passwords():
    policy = BanPolicy(BanConfig(max_retry=2, protect_logged_in=3600))
    admin = "192.0.2.100"
    assert feed(policy, f"Accepted publickey for root from {admin} port 5 ssh2: ED25519 SHA256:x",
                t=T0, pid=1) is None
    for pid in range(2, 12):
        assert obs(policy, Kind.BAD_PASSWORD, admin, t=T0 + 60, pid=pid, user="root") is None
    assert policy.suppressed > 0
    # protection runs out: the next failures ban
    assert obs(policy, Kind.BAD_PASSWORD, admin, t=T0 + 3700, pid=50, user="root") is None
    assert obs(policy, Kind.BAD_PASSWORD, admin, t=T0 + 3701, pid=51,
               user="root") is not None


def test_admin_protection_can_be_disabled_and_is_restored_from_the_store():
    off = BanPolicy(BanConfig(max_retry=1, protect_logged_in=0))
    obs(off, Kind.ACCEPTED, "192.0.2.101", t=T0, pid=1)
    assert obs(off, Kind.BAD_PASSWORD, "192.0.2.101", t=T0 + 1, pid=2) is not None
    restored = BanPolicy(BanConfig(max_retry=1), logged_in={"192.0.2.101/32": T0},
                         login_users={"192.0.2.101/32": ["admin"]})
    assert obs(restored, Kind.BAD_PASSWORD, "192.0.2.101", t=T0 + 1, pid=2,
               user="admin") is None
    # the protection is per offender network: the neighbour is not protected
    assert obs(restored, Kind.BAD_PASSWORD, "192.0.2.102", t=T0 + 1, pid=3,
               user="admin") is not None
    # a login restored without its account (an older store) protects nothing
    blind = BanPolicy(BanConfig(max_retry=1), logged_in={"192.0.2.101/32": T0})
    assert obs(blind, Kind.BAD_PASSWORD, "192.0.2.101", t=T0 + 1, pid=2,
               user="admin") is not None


def guest_logs_in_then_guesses(policy: BanPolicy, addr: str, victims: list[str],
                               t: float = T0) -> int | None:
    """A guest logs in once from addr, then guesses each victim's password in turn (one
    failed password per connection, as paramiko against the real sshd does); the number
    of the guess that got banned, or None."""
    assert feed(policy, f"Accepted password for guest from {addr} port 40000 ssh2",
                t=t, pid=1) is None
    for n in range(1, 26):
        user = victims[(n - 1) % len(victims)]
        ban = feed(policy, f"Failed password for {user} from {addr} port {40000 + n} ssh2",
                   t=t + 10 + n, pid=100 + n)
        if ban is not None:
            return n
    return None


def test_a_guests_login_does_not_shield_guessing_other_accounts():
    """Issue 10: one login shielded the address for a day; a guest guessed root's and
    admin's passwords 25 times unbanned while the control address was banned after 5."""
    control = BanPolicy(BanConfig())
    for n in range(1, 6):
        ban = feed(control, f"Failed password for root from 192.0.2.200 port {n} ssh2",
                   t=T0 + n, pid=n)
    assert ban is not None  # the control: banned at its 5th failure
    policy = BanPolicy(BanConfig())
    assert guest_logs_in_then_guesses(policy, "192.0.2.201", ["root", "admin"]) == 5
    assert policy.suppressed == 0
    # The guest's own mistakes in between change nothing for the others' accounts.
    mixed = BanPolicy(BanConfig())
    feed(mixed, "Accepted password for guest from 192.0.2.202 port 1 ssh2", t=T0, pid=1)
    for n, user in enumerate(["guest", "root", "guest", "root", "guest", "root", "root"]):
        ban = feed(mixed, f"Failed password for {user} from 192.0.2.202 port {n} ssh2",
                   t=T0 + 10 + n, pid=10 + n)
        if ban:
            break
    assert ban is not None and n == 5  # the first failure against root past max_retry
    assert "does not protect failures against root" in ban.reason


def test_own_account_mistakes_are_spared_up_to_the_cap_and_logged_once():
    policy = BanPolicy(BanConfig(protect_max_failures=12))
    addr = "192.0.2.210"
    feed(policy, f"Accepted publickey for admin from {addr} port 1 ssh2: ED25519 SHA256:x",
         t=T0, pid=1)
    bans = [feed(policy, f"Failed password for admin from {addr} port {n} ssh2",
                 t=T0 + 10 + n, pid=10 + n) for n in range(1, 13)]
    assert bans[:11] == [None] * 11 and bans[11] is not None  # the 12th: past the cap
    assert "protects at most 12" in bans[11].reason
    assert policy.suppressed == 7  # failures 5..11 were withheld
    (first,) = policy.take_withheld()
    assert (first.network, first.user, first.logged_in_as) == (f"{addr}/32", "admin",
                                                               ("admin",))
    assert policy.take_withheld() == []  # once per address
    assert policy.withheld() == []       # banned now: no longer withheld


def test_withheld_offenders_are_listed_and_bounded():
    policy = BanPolicy(BanConfig(max_retry=1))
    for i in range(3):
        addr = f"192.0.2.{220 + i}"
        feed(policy, f"Accepted password for u{i} from {addr} port 1 ssh2", t=T0, pid=1)
        for n in range(3):
            assert feed(policy, f"Failed password for u{i} from {addr} port {n} ssh2",
                        t=T0 + i * 10 + n, pid=10 + n) is None
    listed = policy.withheld()
    assert [w.network for w in listed] == ["192.0.2.222/32", "192.0.2.221/32",
                                           "192.0.2.220/32"]
    assert [w.count for w in listed] == [3, 3, 3]
    assert len(policy.take_withheld()) == 3
    policy.expire(T0 + 10_000)  # failures and logins too old
    assert policy.withheld() == []


# -- memory bounds -------------------------------------------------------------------------

def test_tracked_offenders_are_capped_oldest_evicted_first():
    policy = BanPolicy(BanConfig(max_tracked=100, max_retry=2))
    for i in range(150):
        assert obs(policy, Kind.BAD_PASSWORD, f"198.18.0.{i}" if i < 256 else "x", t=T0 + i,
                   pid=1) is None
    assert policy.tracked == 100
    assert policy.evictions == 50
    # 198.18.0.0 was evicted: its second attempt is a first again
    assert obs(policy, Kind.BAD_PASSWORD, "198.18.0.0", t=T0 + 200, pid=2) is None
    # 198.18.0.149 is still tracked: its second attempt bans
    assert obs(policy, Kind.BAD_PASSWORD, "198.18.0.149", t=T0 + 200, pid=2) is not None


def test_recently_active_offender_survives_eviction():
    policy = BanPolicy(BanConfig(max_tracked=100, max_retry=2))
    obs(policy, Kind.PREAUTH_DISCONNECT, "198.18.1.0", t=T0, pid=1)
    for i in range(1, 100):
        obs(policy, Kind.PREAUTH_DISCONNECT, f"198.18.1.{i}", t=T0 + i, pid=1)
    obs(policy, Kind.PREAUTH_DISCONNECT, "198.18.1.0", t=T0 + 100, pid=2)  # touched again
    obs(policy, Kind.PREAUTH_DISCONNECT, "198.18.2.0", t=T0 + 101, pid=1)  # evicts .1.1
    assert policy.evictions == 1
    assert obs(policy, Kind.BAD_PASSWORD, "198.18.1.0", t=T0 + 102, pid=3) is not None


def test_expire_drops_stale_offenders_and_bans():
    policy = BanPolicy(BanConfig(find_time=60, max_retry=3))
    for i in range(10):
        obs(policy, Kind.BAD_PASSWORD, f"198.18.3.{i}", t=T0 + i, pid=1)
    policy.expire(T0 + 65)  # the first five are older than find_time
    assert policy.tracked == 5
    policy.expire(T0 + 1000)
    assert policy.tracked == 0


def test_expire_forgets_old_history_logins_and_finished_bans():
    cfg = BanConfig(max_retry=1, history_time=1000, protect_logged_in=100)
    policy = BanPolicy(cfg, history={"192.0.2.120/32": [T0 - 700]},
                       logged_in={"192.0.2.121/32": T0 - 50})
    policy.expire(T0 + 200)  # the ban history (T0-700) still counts; the login is too old
    assert obs(policy, Kind.BAD_PASSWORD, "192.0.2.121", t=T0 + 200, pid=1) is not None
    assert ban_now(policy, "192.0.2.120", T0 + 200).strikes == 2
    policy.expire(T0 + 5000)  # all history gone, all bans over
    assert ban_now(policy, "192.0.2.120", T0 + 5000).strikes == 1


def test_many_connections_of_one_offender_stay_bounded():
    policy = BanPolicy(BanConfig())
    for pid in range(10_000):
        obs(policy, Kind.BAD_KEY, "198.18.4.1", t=T0 + pid * 0.01, pid=pid)
    packed = policy._offenders[next(iter(policy._offenders))]
    assert len(packed) <= MAX_CONNECTIONS * _CONN.size


# -- manual bans, forget ----------------------------------------------------------------

def test_manual_ban_of_address_network_and_errors():
    policy = BanPolicy(BanConfig(), history={"2001:db8::/64": [T0 - 10]})
    ban = policy.manual_ban("2001:db8::5", None, T0)
    assert ban.network == "2001:db8::/64" and ban.strikes == 2 and ban.duration == 1200
    assert ban.reason == "manual"
    ban = policy.manual_ban("192.0.2.0/24", 3600, T0)
    assert ban.network == "192.0.2.0/24" and ban.until == T0 + 3600
    with pytest.raises(ValueError, match="allow-list"):
        policy.manual_ban("0.0.0.0/0", None, T0)
    with pytest.raises(ValueError, match="allow-list"):
        policy.manual_ban("127.0.0.1", None, T0)
    with pytest.raises(ValueError, match="not an IP"):
        policy.manual_ban("evil.example.com", None, T0)
    with pytest.raises(ValueError, match="positive"):
        policy.manual_ban("192.0.2.1", 0, T0)


def test_wide_manual_ban_covers_its_addresses_until_it_ends():
    policy = BanPolicy(BanConfig(max_retry=1))
    wide = policy.manual_ban("192.0.2.0/24", 100, T0)
    assert obs(policy, Kind.BAD_PASSWORD, "192.0.2.7", t=T0 + 1, pid=1) is None
    assert obs(policy, Kind.BAD_PASSWORD, "192.0.2.7", t=wide.until + 1, pid=2) is not None


def test_overlapping_wide_manual_bans_are_refused_same_range_extends():
    policy = BanPolicy(BanConfig())
    policy.manual_ban("10.0.0.0/8", 100, T0)
    with pytest.raises(ValueError, match=r"overlaps the active ban of 10\.0\.0\.0/8"):
        policy.manual_ban("10.1.0.0/16", 100, T0)
    longer = policy.manual_ban("10.0.0.0/8", 1000, T0 + 1)
    assert longer.until == T0 + 1001 and longer.strikes == 2
    policy.manual_ban("10.1.0.0/16", 100, T0 + 2000)  # the /8 is over


def test_forget_lifts_the_ban_but_keeps_history():
    policy = BanPolicy(BanConfig(max_retry=1))
    first = obs(policy, Kind.BAD_PASSWORD, "192.0.2.110", t=T0, pid=1)
    assert first is not None
    policy.forget(first.network)
    second = obs(policy, Kind.BAD_PASSWORD, "192.0.2.110", t=T0 + 1, pid=2)
    assert second is not None and second.strikes == 2


# -- properties --------------------------------------------------------------------------

KINDS = [k for k in Kind if k is not Kind.ACCEPTED]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 5),
                          st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1"])),
                max_size=60))
def test_never_more_attempts_than_lines_and_bans_need_max_retry(lines):
    """Whatever the mix, an offender is banned no earlier than after max_retry weighted
    lines of its own (the counting rule only merges, it never inflates)."""
    cfg = BanConfig(max_retry=3)
    policy = BanPolicy(cfg)
    weights = {k: getattr(cfg.weights, k.value) for k in KINDS}
    seen: dict[str, float] = {}
    for i, (kind, pid, host) in enumerate(lines):
        seen[host] = seen.get(host, 0.0) + weights[kind]
        ban = obs(policy, kind, host, t=T0 + i, pid=pid or None)
        if ban is not None:
            assert seen[host] >= cfg.max_retry
            seen[host] = 0.0


def test_the_policy_judges_the_event_not_the_message_text():
    """Issue 9: the policy never parses message text. Whether a line is a PAM relay is the
    classifier's finding (Event.pam_relay); a record whose text looks like one but whose
    Event says otherwise counts, and a flagged Event never counts, whatever the text."""
    a = "192.0.2.71"
    policy = BanPolicy(BanConfig(max_retry=2))
    relay_text = f"error: PAM: Authentication failure for root from {a}"
    assert policy.observe(LogRecord(relay_text, time=T0, pid=1), Event(Kind.AUTH_FAILURE, a)) is None
    ban = policy.observe(LogRecord(relay_text, time=T0 + 1, pid=2), Event(Kind.AUTH_FAILURE, a))
    assert ban is not None and ban.network == f"{a}/32"
    policy = BanPolicy(BanConfig(max_retry=1))
    flagged = Event(Kind.AUTH_FAILURE, "192.0.2.72", "root", None, pam_relay=True)
    for pid in range(5):
        assert policy.observe(LogRecord(f"Failed password #{pid}", time=T0, pid=pid), flagged) is None
    assert not hasattr(sys.modules["sshguardd.bans.policy"], "is_pam_line")
