"""End to end: the real daemon (`sshguardd run`) in a Sandbox (private mount/net/pid
namespaces, overlays on /etc, /var, /root and /home, a private journald, a real sshd on port
22), running with its real default paths (/etc/sshguardd/config.toml, /etc/ssh/sshd_config,
/etc/shadow, /var/lib/sshguardd) and its real inotify watcher, while real tools (sed -i,
usermod, passwd, useradd, chpasswd) make the drift. The restart command is a script that
makes the sandbox's sshd re-read its config (SIGHUP) and logs each call to
/run/restarts.log. What the guard did is read back from its alerts in the sandbox's journal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon_helpers import DaemonProc, write_config
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

HASH = "$6$saltsalt$ZmFrZWhhc2hmb3J0ZXN0c29ubHkuLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLi4u"
RESTART = """#!/bin/sh
# Make the sandbox's sshd (started with -D, pid in /run/sshd.pid) re-read its config.
set -e
echo restart >> /run/restarts.log
kill -HUP "$(cat /run/sshd.pid)"
"""


class Guarded:
    """A sandbox with sshd and the drift guard running; helpers to observe both."""

    def __init__(self, sb: Sandbox, logdir: Path, drift_toml: str = "", keys: bool = True):
        self.sb = sb
        # No host keys may leak into the lockout guard's verdict: only what we create.
        sb.run(["sh", "-c", "find /root /home -name 'authorized_keys*' -delete"], check=True)
        # "admin" holds the key the lockout guard looks for.
        sb.run(["useradd", "-m", "-s", "/bin/bash", "admin"], check=True)
        sb.run(["mkdir", "-p", "/etc/sshguardd", "/home/admin/.ssh"], check=True)
        restart = sb.path("/etc/sshguardd/restart-sshd")
        restart.write_text(RESTART)
        restart.chmod(0o755)
        write_config(sb, '[drift]\nrestart_command = ["/etc/sshguardd/restart-sshd"]\n'
                     + drift_toml + "\n[metrics]\nenabled = false\n")
        self.sshd = sb.start_sshd()
        if keys:
            pub = sb.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text()
            sb.path("/home/admin/.ssh/authorized_keys").write_text(pub)
        self.stock = sb.path("/etc/ssh/sshd_config").read_text()
        self.daemon = DaemonProc(sb, logdir / "daemon.log").start()

    def close(self) -> None:
        self.daemon.stop()

    # -- observing
    def repaired(self, setting: str, file: str | None = None) -> int:
        """How many repairs of `setting` (in `file`) the daemon has alerted."""
        return sum(1 for a in self.alerts("repaired")
                   if a["SETTING"] == setting and file in (None, a["FILE"]))

    def sh(self, script: str) -> None:
        self.sb.run(["sh", "-c", script], check=True)

    def text(self, path: str) -> str:
        return self.sb.path(path).read_text()

    def sshd_T(self) -> dict[str, str]:
        out = self.sb.run(["/usr/sbin/sshd", "-T"], check=True).stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def alerts(self, kind: str) -> list[dict]:
        out = self.sb.journal("-o", "json", f"SSHGUARDD_ALERT={kind}")
        return [json.loads(line) for line in out.splitlines() if line]

    def restarts(self) -> int:
        p = self.sb.path("/run/restarts.log")
        return len(p.read_text().splitlines()) if p.exists() else 0

    def shadow_field(self, user: str) -> str:
        for line in self.text("/etc/shadow").splitlines():
            if line.split(":")[0] == user:
                return line.split(":")[1]
        raise KeyError(user)


@pytest.fixture
def start(sandbox: Sandbox, tmp_path: Path):
    made: list[Guarded] = []

    def start(**kw) -> Guarded:
        g = Guarded(sandbox, tmp_path, **kw)
        made.append(g)
        return g

    yield start
    for g in made:
        g.close()


@pytest.fixture
def sandbox(tmp_path: Path):
    # /root and /home are made copy-on-write too, so keys and new users stay inside.
    with Sandbox(tmp_path, overlays=("/var", "/root", "/home")) as sb:
        yield sb


def test_start_hardens_stock_config_and_sed_i_drift_is_reverted(start):
    g = start()
    # The stock Debian config sets none of these: the start check adds them where they win.
    wait_for(lambda: g.sshd_T()["permitrootlogin"] == "no", 10, what="hardening at start")
    assert g.sshd_T()["passwordauthentication"] == "no"
    assert g.restarts() == 1
    wait_for(lambda: g.sb.listening(22), 10, what="sshd listening after its restart")
    hardened = g.text("/etc/ssh/sshd_config")
    added = [ln for ln in hardened.splitlines() if ln not in g.stock.splitlines()]
    # Each line sshguardd writes comes with a comment naming it (issue 12 item 6).
    assert [ln for ln in added if not ln.startswith("# sshguardd ")] == [
        "PermitRootLogin no", "PasswordAuthentication no"]
    assert len(added) == 4 and added[0].startswith("# sshguardd ")

    def ours_aside(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if not ln.startswith("# sshguardd ")]

    g.sh("sed -i 's/^PermitRootLogin no$/PermitRootLogin yes/' /etc/ssh/sshd_config")
    wait_for(lambda: ours_aside(g.text("/etc/ssh/sshd_config")) == ours_aside(hardened), 10,
             what="sed -i's PermitRootLogin yes to be reverted")
    assert g.sshd_T()["permitrootlogin"] == "no"
    wait_for(lambda: g.restarts() == 2, 5, what="sshd to be restarted")
    wait_for(lambda: g.sb.listening(22), 10, what="sshd listening after its restart")
    kept = list(g.sb.path("/var/lib/sshguardd/drift").glob("*sshd_config.diff"))
    assert any("+PermitRootLogin no" in p.read_text() and "-PermitRootLogin yes"
               in p.read_text() for p in kept)
    assert [a["SETTING"] for a in g.alerts("repaired")][-1] == "permitrootlogin"


def test_dropin_ahead_of_main_file_is_neutralised(start):
    g = start()
    wait_for(lambda: g.sshd_T()["passwordauthentication"] == "no", 10, what="hardening")
    main = g.text("/etc/ssh/sshd_config")
    # cloud-init's way: a drop-in read before the main file's own setting.
    g.sh("printf '# written by cloud-init\\nPasswordAuthentication yes\\n' "
         "> /etc/ssh/sshd_config.d/50-cloud-init.conf")
    wait_for(lambda: g.text("/etc/ssh/sshd_config.d/50-cloud-init.conf").endswith(
             "): keys only, password guessing gets nowhere\nPasswordAuthentication no\n"), 10,
             what="the drop-in to be repaired")
    assert g.text("/etc/ssh/sshd_config.d/50-cloud-init.conf").startswith(
        "# written by cloud-init\n# sshguardd ")
    assert g.sshd_T()["passwordauthentication"] == "no"
    assert g.text("/etc/ssh/sshd_config") == main


def test_root_relocked_while_other_accounts_changes_survive(start):
    g = start()
    g.sh(f"usermod -p '{HASH}' root")
    wait_for(lambda: g.shadow_field("root") == "!" + HASH, 10, what="root to be relocked")
    g.sh("passwd -u root")
    wait_for(lambda: g.repaired("root password") >= 2
             and g.shadow_field("root") == "!" + HASH, 10,
             what="root to be relocked after passwd -u")
    # Other accounts: a new user and a password change are not drift.
    g.sh("useradd -m -s /bin/bash alice")
    assert g.shadow_field("alice") in ("!", "*", "!*")
    g.sh("echo 'alice:Secret-Pw-1' | chpasswd")
    alice = g.shadow_field("alice")
    assert alice.startswith("$")
    g.sh(f"usermod -p '{HASH}' root")  # one more relock, with the others' edits present
    wait_for(lambda: g.repaired("root password") >= 3, 10,
             what="the third relock")
    assert g.shadow_field("alice") == alice and g.shadow_field("root") == "!" + HASH
    st = g.sb.path("/etc/shadow").stat()
    assert st.st_mode & 0o777 == 0o640
    journal = g.sb.journal("SYSLOG_IDENTIFIER=sshguardd")
    assert HASH not in journal and "$6$" not in journal


def test_drift_that_breaks_the_config_is_not_made_worse(start):
    g = start()
    wait_for(lambda: g.sshd_T()["permitrootlogin"] == "no", 10, what="hardening")
    restarts = g.restarts()
    g.sh("sed -i -e 's/^PermitRootLogin no$/PermitRootLogin yes/' "
         "-e '1i NoSuchOption yes' /etc/ssh/sshd_config")
    broken = g.text("/etc/ssh/sshd_config")
    wait_for(lambda: g.alerts("repair_failed"), 10, what="the repair_failed alert")
    (alert,) = g.alerts("repair_failed")
    assert alert["STEP"] == "validate" and "NoSuchOption" in alert["STDERR"]
    assert g.text("/etc/ssh/sshd_config") == broken
    assert g.restarts() == restarts and g.sb.listening(22)


def test_lockout_guard_refuses_when_no_keys_exist(start):
    g = start(keys=False)
    wait_for(lambda: g.alerts("lockout_guard"), 10, what="the lockout guard's alert")
    assert g.repaired("passwordauthentication") == 0
    assert g.sshd_T()["passwordauthentication"] == "yes"
    assert g.sshd_T()["permitrootlogin"] == "no"  # the rest is still enforced
    (alert,) = g.alerts("lockout_guard")
    assert "no account that can log in has an authorized key" in alert["REASON"]


def test_revert_war_is_detected_and_stopped(start):
    g = start(drift_toml='[drift.revert_war]\nmax_reverts = 2\nwindow = "10m"\n'
              'pause = "1h"\n')
    wait_for(lambda: g.sshd_T()["permitrootlogin"] == "no", 10, what="hardening")
    dropin = "/etc/ssh/sshd_config.d/50-cloud-init.conf"
    for n in (1, 2):
        g.sh(f"printf '# generated by cloud-init\\nPermitRootLogin yes\\n' > {dropin}")
        wait_for(lambda n=n: g.repaired("permitrootlogin", dropin) == n, 10,
                 what=f"repair {n}")
    g.sh(f"printf '# generated by cloud-init\\nPermitRootLogin yes\\n' > {dropin}")
    wait_for(lambda: g.alerts("revert_war"), 10, what="the revert_war alert")
    (war,) = g.alerts("revert_war")
    assert war["FILE"] == dropin and war["WRITER"] == "cloud-init"
    assert int(war["PRIORITY"]) <= 2  # critical or more urgent
    assert g.text(dropin).endswith("PermitRootLogin yes\n")
    assert g.repaired("permitrootlogin", dropin) == 2
    assert g.sshd_T()["permitrootlogin"] == "yes"  # left as the other writer wants it
    assert "paused" in g.daemon.status()["last_drift"]


def test_audit_mode_changes_nothing(start):
    g = start(drift_toml='mode = "audit"\n')
    wait_for(lambda: any(a["SETTING"] == "permitrootlogin" for a in g.alerts("drift")), 10,
             what="the start check's drift alert")
    g.sh(f"usermod -p '{HASH}' root")
    wait_for(lambda: any(a["SETTING"] == "root password" for a in g.alerts("drift")), 10,
             what="the root password drift alert")
    assert g.text("/etc/ssh/sshd_config") == g.stock
    assert g.shadow_field("root") == HASH
    assert g.restarts() == 0
    assert g.alerts("repaired") == [] and g.alerts("drift")


def test_shadow_revert_war_names_usermod_from_the_journal(start):
    g = start(drift_toml='[drift.revert_war]\nmax_reverts = 2\nwindow = "10m"\n'
              'pause = "1h"\n')
    for n in (1, 2):
        g.sh(f"usermod -p '{HASH}' root")
        wait_for(lambda n=n: g.repaired("root password") == n, 10, what=f"relock {n}")
    g.sh(f"usermod -p '{HASH}' root")
    wait_for(lambda: g.alerts("revert_war"), 10, what="the revert_war alert")
    (war,) = g.alerts("revert_war")
    assert war["FILE"] == "/etc/shadow" and war["WRITER"].startswith("usermod (pid ")
    assert g.shadow_field("root") == HASH  # left alone during the pause
    journal = g.sb.journal("SYSLOG_IDENTIFIER=sshguardd")
    assert HASH not in journal


def test_open_ssh_session_survives_a_repair(start):
    import paramiko

    g = start()
    wait_for(lambda: g.sshd_T()["passwordauthentication"] == "no", 10, what="hardening")
    wait_for(lambda: g.sb.listening(22), 10, what="sshd listening")
    key = paramiko.Ed25519Key.from_private_key_file(
        str(g.sb.path("/etc/ssh/ssh_host_ed25519_key")))
    sock = g.sb.connect(None, "127.0.0.1", 22)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        transport.auth_publickey("admin", key)

        def run(cmd: str) -> str:
            ch = transport.open_session(timeout=10)
            try:
                ch.exec_command(cmd)
                return ch.makefile("r").read().decode()
            finally:
                ch.close()

        assert run("echo before") == "before\n"
        restarts = g.restarts()
        g.sh("sed -i 's/^PermitRootLogin no$/PermitRootLogin yes/' /etc/ssh/sshd_config")
        wait_for(lambda: g.restarts() > restarts, 10, what="the repair's sshd restart")
        wait_for(lambda: g.sb.listening(22), 10, what="sshd listening again")
        assert g.sshd_T()["permitrootlogin"] == "no"
        assert run("echo after") == "after\n"  # the same connection, still up
    finally:
        transport.close()
        sock.close()
