"""Journal alerts: written with the real journal.send to a private journald, found by
`journalctl MESSAGE_ID=...` with their fields, and explained by the shipped catalog."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sshguardd.demo.sandbox import Sandbox, wait_for
from sshguardd.effects.alerts import ALERT_TYPES, Alerts, scrub, stderr_is_journal

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "packaging" / "systemd" / "sshguardd.catalog"
HASH = "$6$rounds=5000$saltsalt$" + "x" * 86  # a sha512-crypt-shaped string, not a real one

# One call per alert type, with the fields a router would match on.
CALLS: dict[str, tuple[tuple[Any, ...], dict[str, str]]] = {
    "ban": (("203.0.113.7/32", 600, 2, "5 failures in 10m"),
            {"NETWORK": "203.0.113.7/32", "ADDRESS": "203.0.113.7", "BAN_DURATION": "600",
             "STRIKES": "2", "REASON": "5 failures in 10m", "PRIORITY": "5"}),
    "unban": (("2001:db8:1::/64", "manual"),
              {"NETWORK": "2001:db8:1::/64", "REASON": "manual", "PRIORITY": "6"}),
    "drift": (("permitrootlogin", "/etc/ssh/sshd_config", "no", "yes"),
              {"SETTING": "permitrootlogin", "FILE": "/etc/ssh/sshd_config",
               "OLD_VALUE": "no", "NEW_VALUE": "yes", "PRIORITY": "4"}),
    "repaired": (("root", "/etc/shadow", "root:" + HASH + ":19000::::::", "locked"),
                 {"SETTING": "root", "FILE": "/etc/shadow", "OLD_VALUE": "<redacted>",
                  "NEW_VALUE": "locked", "PRIORITY": "5"}),
    "repair_refused": (("passwordauthentication", "/etc/ssh/sshd_config", "audit mode"),
                       {"SETTING": "passwordauthentication", "REASON": "audit mode",
                        "PRIORITY": "3"}),
    "repair_failed": (("validate", "/etc/ssh/sshd_config",
                       ["/usr/sbin/sshd", "-t", "-f", "/etc/ssh/.sshd_config.new"],
                       "/etc/ssh/.sshd_config.new line 3: Bad configuration option"),
                      {"STEP": "validate",
                       "COMMAND": "/usr/sbin/sshd -t -f /etc/ssh/.sshd_config.new",
                       "STDERR": "/etc/ssh/.sshd_config.new line 3: Bad configuration option",
                       "PRIORITY": "2"}),
    "revert_war": (("permitrootlogin", "/etc/ssh/sshd_config", "puppet", 3),
                   {"WRITER": "puppet", "REVERT_COUNT": "3", "PRIORITY": "1"}),
    "restart_failed": ((["systemctl", "restart", "ssh.service"], "Job failed"),
                       {"COMMAND": "systemctl restart ssh.service", "STDERR": "Job failed",
                        "PRIORITY": "2"}),
    "lockout_guard": (("no administrator has an authorized key",),
                      {"REASON": "no administrator has an authorized key", "PRIORITY": "3"}),
    "startup_problem": (("firewall", "nft: Operation not permitted"),
                        {"WHAT": "firewall", "DETAIL": "nft: Operation not permitted",
                         "PRIORITY": "3"}),
    "sshd_outdated": (("openssh-server", "1:9.2p1-2+deb12u9", "1:9.2p1-2+deb12u10", True,
                       False, "DSA-9999-1"),
                      {"PACKAGE": "openssh-server", "INSTALLED": "1:9.2p1-2+deb12u9",
                       "CANDIDATE": "1:9.2p1-2+deb12u10", "SECURITY": "yes", "STALE": "no",
                       "REASON": "DSA-9999-1", "PRIORITY": "4"}),
    "log_suppressed": (("ssh.service", 31999),
                       {"UNIT": "ssh.service", "DROPPED": "31999", "PRIORITY": "3"}),
    "fleet_quarantine": (("web-7", "412 bans within 1m (limit 400)", 3600),
                         {"PUBLISHER": "web-7", "QUARANTINE_DURATION": "3600",
                          "PRIORITY": "3"}),
    "fleet_outage": (("redis://10.0.0.5:6379", "Connection refused", 45),
                     {"ENGINE": "redis://10.0.0.5:6379", "OUTAGE_SECONDS": "45",
                      "PRIORITY": "3"}),
}


def collect() -> tuple[Alerts, list[tuple[str, dict[str, Any]]]]:
    sent: list[tuple[str, dict[str, Any]]] = []
    return Alerts(send=lambda message, **f: sent.append((message, f))), sent


def test_every_type_has_a_unique_stable_id() -> None:
    ids = [t.message_id for t in ALERT_TYPES.values()]
    assert len(set(ids)) == len(ids) == len(CALLS)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    # Routers match on these: changing one is a breaking change. Pin two of them.
    assert ALERT_TYPES["ban"].message_id == "3f23408183d74f4784dc5f117abdee3f"
    assert ALERT_TYPES["revert_war"].message_id == "8c2a5d5824594df39cb21d6316bafbc9"


def test_severities() -> None:
    prio = {name: t.priority for name, t in ALERT_TYPES.items()}
    assert prio["revert_war"] <= 2 and prio["repair_failed"] <= 2  # alert / crit
    assert prio["restart_failed"] <= 2
    assert prio["ban"] >= 5 and prio["unban"] >= 5  # routine: notice / info


@pytest.mark.parametrize("kind", sorted(CALLS))
def test_fields(kind: str) -> None:
    alerts, sent = collect()
    args, expected = CALLS[kind]
    getattr(alerts, kind)(*args)
    [(message, fields)] = sent
    assert fields["MESSAGE_ID"] == ALERT_TYPES[kind].message_id
    assert fields["SSHGUARDD_ALERT"] == kind
    assert fields["SYSLOG_IDENTIFIER"] == "sshguardd"
    for key, value in expected.items():
        assert fields[key] == value, key
    assert "\n" not in message
    assert all(isinstance(v, str) for v in fields.values())


def test_no_shadow_contents_anywhere(caplog: pytest.LogCaptureFixture) -> None:
    alerts, sent = collect()
    line = "root:" + HASH + ":19000:0:99999:7:::"
    alerts.drift("root", "/etc/shadow", line, "!" + HASH)
    alerts.repaired("root", "/etc/shadow", "unlocked", "locked")
    alerts.repair_failed("replace", "/etc/shadow", "rename", "cannot write " + line)
    alerts.startup_problem("shadow", "bad line " + line)
    blob = json.dumps(sent) + caplog.text
    assert "saltsalt" not in blob and "xxxxxxxx" not in blob
    assert sent[1][1]["OLD_VALUE"] == "unlocked"  # descriptive words pass


def test_no_duplicate_log_line_when_stderr_is_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sshguardd.effects.alerts")
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, stream.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "1:2"}, stream.fileno())
        assert not stderr_is_journal({}, stream.fileno())
    alerts, sent = collect()
    monkeypatch.setattr(alerts, "_echo", False)
    alerts.revert_war("permitrootlogin", "/etc/ssh/sshd_config", "puppet", 3)
    assert len(sent) == 1  # the structured entry is still written
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    caplog.clear()
    loud = Alerts(send=lambda message, **f: None, echo=True)
    loud.revert_war("permitrootlogin", "/etc/ssh/sshd_config", "puppet", 3)
    assert [r.levelno for r in caplog.records] == [logging.CRITICAL]


def test_unban_of_prefix_has_no_address() -> None:
    alerts, sent = collect()
    alerts.unban("2001:db8:1::/64")
    alerts.ban("2001:db8::5/128", 60)
    assert "ADDRESS" not in sent[0][1]
    assert sent[1][1]["ADDRESS"] == "2001:db8::5"


def test_journal_failure_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    def broken(message: str, **fields: Any) -> None:
        raise OSError(2, "No such file or directory")

    alerts = Alerts(send=broken)
    alerts.ban("192.0.2.1/32", 60)
    assert alerts.failed_sends == 1
    assert "could not write ban alert" in caplog.text


def test_scrub_caps_length() -> None:
    assert len(scrub("e" * 100_000)) <= 4097


# -- the catalog -----------------------------------------------------------------------

def parse_catalog(text: str) -> dict[str, tuple[dict[str, str], str]]:
    entries: dict[str, tuple[dict[str, str], str]] = {}
    blocks = re.split(r"^-- ([0-9a-f]{32})\n", text, flags=re.M)
    for mid, body in zip(blocks[1::2], blocks[2::2], strict=True):
        head, _, prose = body.partition("\n\n")
        headers = dict(line.split(": ", 1) for line in head.splitlines())
        assert mid not in entries, f"duplicate catalog entry {mid}"
        entries[mid] = (headers, prose)
    return entries


def test_catalog_explains_every_alert_with_its_fields() -> None:
    entries = parse_catalog(CATALOG.read_text())
    assert set(entries) == {t.message_id for t in ALERT_TYPES.values()}
    for kind, (args, _) in CALLS.items():
        headers, prose = entries[ALERT_TYPES[kind].message_id]
        assert headers["Subject"] and headers["Defined-By"] == "sshguardd"
        assert len(prose.split()) > 15, kind
        # Every @FIELD@ the catalog substitutes is one the alert actually sends.
        alerts, sent = collect()
        getattr(alerts, kind)(*args)
        used = set(re.findall(r"@([A-Z_]+)@", headers["Subject"] + prose))
        assert used <= set(sent[0][1]), (kind, used - set(sent[0][1]))


# -- the real journal ----------------------------------------------------------------

EMIT = r"""
import json, sys
from sshguardd.effects.alerts import Alerts
calls = json.loads(sys.argv[1])
a = Alerts()
for kind, args in calls.items():
    getattr(a, kind)(*args)
print(a.failed_sends)
"""


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path, etc_overlay=False, journald=True) as sb:
        yield sb


def journal_entries(box: Sandbox, message_id: str) -> list[dict[str, Any]]:
    r = box.run(["journalctl", "--no-pager", "-o", "json", f"MESSAGE_ID={message_id}"],
                check=True)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def test_real_journal_and_catalog(box: Sandbox) -> None:
    r = box.run([sys.executable, "-c", EMIT, json.dumps(
        {kind: args for kind, (args, _) in CALLS.items()})], check=True)
    assert r.stdout.strip() == "0", r.stderr

    for kind, (_, expected) in CALLS.items():
        mid = ALERT_TYPES[kind].message_id
        [entry] = wait_for(lambda mid=mid: journal_entries(box, mid), timeout=10,
                           what=f"the {kind} alert in the journal")
        for key, value in expected.items():
            assert entry[key] == value, (kind, key)
        assert entry["SYSLOG_IDENTIFIER"] == "sshguardd"

    # journalctl -x explains them once the catalog is installed (private mounts only).
    for d in ("/usr/lib/systemd/catalog", "/var/lib/systemd"):
        box.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
    box.path("/usr/lib/systemd/catalog/sshguardd.catalog").write_text(CATALOG.read_text())
    r = box.run(["journalctl", "--update-catalog"], check=True)
    assert r.stderr.strip() == ""  # a malformed catalog makes it complain
    listed = box.run(["journalctl", "--list-catalog"], check=True).stdout
    for t in ALERT_TYPES.values():
        assert t.message_id in listed
    shown = box.run(["journalctl", "--no-pager", "-x", "-o", "short",
                     f"MESSAGE_ID={ALERT_TYPES['ban'].message_id}"], check=True).stdout
    assert "Subject: sshguardd banned 203.0.113.7/32 for 600 s" in shown
    assert "sshguardd unban 203.0.113.7/32" in shown
