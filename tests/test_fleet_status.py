"""The fleet status record (`sshguardd fleet status`): the real daemon in a sandbox with its
drift guard on, publishing to a real redis-server on a Unix socket. The record carries
whether the host complies with its drift policy (what `sshguardd check` audits) and the
last repair the daemon made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import DaemonProc, write_config
from fleet_helpers import RedisServer, password
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

CONFIG = """
[drift]
mode = "{mode}"
restart_command = ["/bin/true"]
[metrics]
enabled = false
[updates]
enabled = false
[fleet]
enabled = true
url = "unix://{socket}"
host = "h1"
password_file = "/etc/sshguardd/fleet.password"
status_interval = 0.5
"""


def record(server: RedisServer) -> dict[str, Any] | None:
    admin = server.admin()
    try:
        raw = admin.get("{fleet}:status:h1")
    finally:
        admin.close()
    return json.loads(raw) if raw else None


def test_the_status_record_says_compliance_and_the_last_repair(sandbox: Sandbox,
                                                               tmp_path: Path) -> None:
    server = RedisServer(tmp_path, ["h1"]).start()
    box = sandbox
    try:
        box.run(["ssh-keygen", "-A"], check=True)  # sshd -t needs host keys
        pw = box.path("/etc/sshguardd/fleet.password")
        pw.parent.mkdir(parents=True, exist_ok=True)
        pw.write_text(password("h1") + "\n")
        pw.chmod(0o600)
        # Debian's stock sshd_config permits root logins with a key and passwords: the
        # first is repaired at start; the lockout guard refuses the second (no account
        # here has a key sshd would accept), so the host does not comply.
        write_config(box, CONFIG.format(mode="enforce", socket=server.socket))
        d = DaemonProc(box, tmp_path / "daemon.log").start()
        try:
            wait_for(lambda: (record(server) or {}).get("last_repair") is not None, 20,
                     what="a status record with the start-up repair")
            rec = record(server)
            assert rec is not None
            assert rec["compliant"] is False
            assert rec["last_repair"]["item"].lower() == "permitrootlogin"
            assert rec["last_repair"]["file"] == "/etc/ssh/sshd_config"
            out = d.cli("fleet", "status").stdout
            header, row = out.splitlines()[:2]
            assert "COMPLIANT" in header and "LAST REPAIR" in header
            assert row.split()[:2] == ["h1", "ok"] and " NO " in row, out
            assert "permitrootlogin" in row.lower() and " ago " in row, out
            # The admin turns passwords off: judged again at once, and now it complies.
            box.run(["sed", "-i", "1i PasswordAuthentication no", "/etc/ssh/sshd_config"],
                    check=True)
            wait_for(lambda: (record(server) or {}).get("compliant") is True, 20,
                     what="the record to say the host complies")
            st = json.loads(d.cli("fleet", "status", "--json").stdout)
            assert st["hosts"][0]["compliant"] is True
            assert " yes " in d.cli("fleet", "status").stdout
        finally:
            d.stop()
    finally:
        server.close()
