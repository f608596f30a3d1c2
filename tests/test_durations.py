"""Durations are finite and bounded, and nothing is clamped in silence (issue 11, item 4).

Each bad value below passed `check-config` before and reached the daemon: `inf` debounce
killed the watcher thread, a ban past nft's range (about 1.8e10 s, ERANGE) failed every
ban of its transaction and then every start, a JSON Infinity on the control socket left a
network "banned until inf", `ban_time = "2w"` under the default max_ban_time banned for 1w.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_helpers import DaemonProc, banned, kernel_elements, write_config
from sshguardd import config, durations
from sshguardd.bans.policy import BanPolicy
from sshguardd.demo.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value,seconds", [
    ("90s", 90), ("10m", 600), ("1h30m", 5400), ("7d", 604800), ("1w", 604800),
    (45, 45), ("2.5m", 150), ("120", 120), (0, 0), ("3650d", 3650 * 86400),
])
def test_parse(value: object, seconds: float) -> None:
    assert durations.parse(value) == seconds


@pytest.mark.parametrize("value,reason", [
    ("10x", "invalid duration"), ("m10", "invalid duration"), ("", "invalid duration"),
    ("1h 30", "invalid duration"), (True, "boolean"), ([1], "expected a duration"),
    (math.inf, "not a finite"), (-math.inf, "not a finite"), (math.nan, "not a finite"),
    ("9" * 400, "not a finite"),             # float("999...") is inf
    (-1, "negative"), (1e12, "longer than 3650d"), ("1000000w", "longer than 3650d"),
])
def test_parse_rejects(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        durations.parse(value)


@pytest.mark.parametrize("value,reason", [
    (0, "positive"), ("0s", "positive"), ("366d", "longer than the 365d"),
    ("1000000d", "longer than the 365d"), (math.inf, "not a finite"),
    (math.nan, "not a finite"), (1e12, "longer than the 365d"),
])
def test_ban_length_bounds(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        durations.ban_length(value)


def test_the_ceiling_is_far_inside_what_nft_takes() -> None:
    assert durations.ban_length("365d") == durations.BAN_CEILING == 365 * 86400
    assert durations.BAN_CEILING < 18_446_744_073 / 100  # nft's ERANGE limit (2**64 ms)


@pytest.mark.parametrize("seconds,text", [
    (0.1, "0.1s"), (45, "45s"), (90, "1m30s"), (5400, "1h30m"), (604800, "1w"),
    (1209600, "2w"), (365 * 86400, "365d"), (86400 + 1, "1d1s"),
])
def test_to_text(seconds: float, text: str) -> None:
    assert durations.to_text(seconds) == text
    assert durations.parse(text) == seconds


# Every value issue 11 lists, as a config file: the key path and the reason reported.
BAD = [
    ("[ban]\nban_time = 1e12\n", "ban.ban_time", "longer than the 365d a ban may last"),
    ("[ban]\nban_time = '1000000w'\n", "ban.ban_time", "1000000w is longer than the 365d"),
    ("[ban]\nban_time = inf\n", "ban.ban_time", "not a finite duration"),
    ("[ban]\nban_time = nan\n", "ban.ban_time", "not a finite duration"),
    ("[ban]\nban_time = '400d'\nmax_ban_time = '400d'\n", "ban.ban_time",
     "longer than the 365d a ban may last"),
    ("[ban]\nmax_ban_time = '2y'\n", "ban.max_ban_time", "invalid duration"),
    ("[ban]\nmax_ban_time = '366d'\n", "ban.max_ban_time", "longer than the 365d"),
    ("[ban]\nban_time = '0s'\n", "ban.ban_time", "0s would ban nobody"),
    ("[ban]\nfind_time = '0s'\n", "ban.find_time", "never add up to a ban"),
    ("[drift]\ndebounce = inf\n", "drift.debounce", "not a finite duration"),
    ("[drift]\ndebounce = '5m'\n", "drift.debounce", "longer than 1m"),
    ("[ban]\nban_time = '2w'\n", "ban.ban_time",
     "2w is longer than ban.max_ban_time (1w), which caps every ban"),
    ("[ban]\nhistory_time = -inf\n", "ban.history_time", "not a finite duration"),
    ("[drift.revert_war]\npause = 1e300\n", "drift.revert_war.pause", "longer than 3650d"),
]


@pytest.mark.parametrize("text,key,reason", BAD)
def test_config_rejects_with_key_path(text: str, key: str, reason: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse(text, "t.toml")
    assert [(k, reason) for k, r in err.value.problems if k == key and reason in r], \
        err.value.problems


@pytest.mark.parametrize("text,key,reason", BAD)
def test_check_config_exits_78_naming_file_key_reason(tmp_path: Path, text: str, key: str,
                                                      reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    r = subprocess.run([sys.executable, "-m", "sshguardd", "check-config", "--config",
                        str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       check=False)
    assert r.returncode == 78, r.stdout + r.stderr
    line = f"{path}: {key}: "
    assert any(ln.startswith(line) and reason in ln for ln in r.stdout.splitlines()), r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_long_bans_that_fit_are_fine() -> None:
    cfg = config.parse("[ban]\nban_time = '2w'\nmax_ban_time = '365d'\n")
    assert (cfg.ban.ban_time, cfg.ban.max_ban_time) == (14 * 86400, 365 * 86400)
    # escalation stops at the ceiling the admin chose: a documented cap, not a silent one
    assert BanPolicy(cfg.ban).duration_for(10) == 365 * 86400


@pytest.mark.parametrize("duration", [math.inf, math.nan, 1e12, 0.0, -5.0])
def test_manual_ban_refuses_what_nft_or_the_policy_cannot_hold(duration: float) -> None:
    policy = BanPolicy(config.BanConfig())
    with pytest.raises(ValueError):
        policy.manual_ban("192.0.2.9", duration, now=1_700_000_000.0)
    assert policy.manual_ban("192.0.2.9", 365 * 86400, now=1_700_000_000.0).duration \
        == 365 * 86400


def test_cli_ban_for_too_long_is_a_usage_error() -> None:
    # Parsed before the control socket is asked: no daemon needed to refuse it.
    r = subprocess.run([sys.executable, "-m", "sshguardd", "ban", "192.0.2.9", "--for",
                        "1000000d", "--socket", "/nonexistent"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--for: " in r.stderr and "longer than" in r.stderr


@pytest.mark.e2e
def test_control_socket_refuses_infinity_and_nan(sandbox: Sandbox, tmp_path: Path) -> None:
    write_config(sandbox, "[drift]\nenabled = false\n[metrics]\nenabled = false\n")
    daemon = DaemonProc(sandbox, tmp_path / "daemon.log").start()
    try:
        for duration in (math.inf, math.nan, 1e12):  # json.dumps writes Infinity, NaN
            answer = daemon.request({"cmd": "ban", "address": "192.0.2.9",
                                     "duration": duration})
            assert answer["ok"] is False, answer
        assert not banned(sandbox, "192.0.2.9")
        assert daemon.status()["bans_active"] == 0
        # the daemon still bans: nothing was poisoned
        answer = daemon.request({"cmd": "ban", "address": "192.0.2.10", "duration": 600})
        assert answer["ok"] is True, answer
        assert kernel_elements(sandbox) == {"192.0.2.10"}
    finally:
        assert daemon.stop() == 0, daemon.log()
