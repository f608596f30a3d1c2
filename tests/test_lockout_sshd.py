"""The lockout guard against a real sshd: the four configurations of issue 10 in which the
old guard (a login shell and a non-empty authorized_keys counted as "can log in") let the
daemon turn passwords off and nobody could log in afterwards.

Each case runs in a Sandbox (private namespaces, overlays on /etc, /var, /root, /home, a
private journald, the stock sshd on port 22) with real accounts (useradd, chpasswd), real
key files and the real daemon (`sshguardd run`, enforce mode, its restart command a script
that HUPs sshd). Each test checks, with real logins (OpenSSH's client for keys, paramiko for
passwords):
  1. before: the admin can log in;
  2. the daemon refuses the repair with a `lockout_guard` alert naming the reason, and the
     admin can still log in;
  3. the repair made by hand (what the old guard let through) leaves nobody able to log in,
     which is why it was refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import paramiko
import pytest

from daemon_helpers import DaemonProc, write_config
from sshguardd.demo.sandbox import Sandbox, wait_for

pytestmark = pytest.mark.e2e

RESTART = """#!/bin/sh
echo restart >> /run/restarts.log
kill -HUP "$(cat /run/sshd.pid)"
"""
PASSWORD = "Lockout-Test-Pw-1"


class Host:
    """A sandbox with accounts, sshd and (once `guard()` is called) the daemon."""

    def __init__(self, sb: Sandbox, logdir: Path):
        self.sb = sb
        self.logdir = logdir
        self.daemon: DaemonProc | None = None
        sb.run(["sh", "-c", "find /root /home -name 'authorized_keys*' -delete"], check=True)
        sb.run(["mkdir", "-p", "/etc/sshguardd", "/run/keys"], check=True)
        restart = sb.path("/etc/sshguardd/restart-sshd")
        restart.write_text(RESTART)
        restart.chmod(0o755)
        write_config(sb, '[drift]\nrestart_command = ["/etc/sshguardd/restart-sshd"]\n'
                     "\n[metrics]\nenabled = false\n")

    def sh(self, script: str) -> str:
        return self.sb.run(["sh", "-c", script], check=True).stdout

    def user(self, name: str, *, password: bool = False, key_options: str | None = None,
             shell: str = "/bin/bash") -> str:
        """Make an account; with key_options (possibly "") give it a fresh key with those
        options. Returns the private key's path inside the sandbox."""
        self.sh(f"useradd -m -s {shell} {name}")
        if password:
            self.sh(f"echo '{name}:{PASSWORD}' | chpasswd")
        key = f"/run/keys/{name}"
        if key_options is not None:
            self.sh(f"ssh-keygen -q -t ed25519 -N '' -f {key} && "
                    f"install -d -o {name} -g {name} -m 700 /home/{name}/.ssh")
            pub = self.sb.path(f"{key}.pub").read_text()
            prefix = f"{key_options} " if key_options else ""
            self.sb.path(f"/home/{name}/.ssh/authorized_keys").write_text(prefix + pub)
            self.sh(f"chown {name}: /home/{name}/.ssh/authorized_keys && "
                    f"chmod 600 /home/{name}/.ssh/authorized_keys")
        return key

    def config(self, lines: str) -> None:
        """Put lines at the top of sshd_config (before anything else can set them)."""
        p = self.sb.path("/etc/ssh/sshd_config")
        p.write_text(lines + p.read_text())

    def start_sshd(self) -> None:
        self.sb.start_sshd()

    def hup(self) -> None:
        self.sh('kill -HUP "$(cat /run/sshd.pid)"')
        wait_for(lambda: self.sb.listening(22), 10, what="sshd after SIGHUP")

    def sshd_T(self) -> dict[str, str]:
        out = self.sh("/usr/sbin/sshd -T")
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    # -- logging in for real
    def key_login(self, user: str, key: str) -> str | None:
        """`id -un` run through ssh with the key, or None if the login failed."""
        r = self.sb.run(["ssh", "-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                         "-o", "PreferredAuthentications=publickey", "-o", "LogLevel=ERROR",
                         f"{user}@127.0.0.1", "id -un"], timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None

    def password_login(self, user: str, key: str | None = None) -> str | None:
        """`id -un` through a password login (after the key, when given), or None."""
        sock = self.sb.connect(None, "127.0.0.1", 22)
        t = paramiko.Transport(sock)
        try:
            t.start_client(timeout=10)
            if key is not None:
                pkey = paramiko.Ed25519Key.from_private_key_file(str(self.sb.path(key)))
                try:
                    t.auth_publickey(user, pkey)
                except paramiko.AuthenticationException:
                    return None
            if not t.is_authenticated():
                try:
                    t.auth_password(user, PASSWORD)
                except paramiko.AuthenticationException:
                    return None
            chan = t.open_session(timeout=10)
            chan.exec_command("id -un")
            return chan.makefile("r").read().decode().strip()
        finally:
            t.close()

    # -- the daemon
    def guard(self) -> None:
        self.daemon = DaemonProc(self.sb, self.logdir / "daemon.log").start()
        wait_for(lambda: self.alerts("lockout_guard"), 20, what="the lockout_guard alert")

    def alerts(self, kind: str) -> list[dict[str, str]]:
        out = self.sb.journal("-o", "json", f"SSHGUARDD_ALERT={kind}")
        return [json.loads(line) for line in out.splitlines() if line]

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


@pytest.fixture
def host(tmp_path: Path):
    with Sandbox(tmp_path, overlays=("/var", "/root", "/home")) as sb:
        h = Host(sb, tmp_path)
        try:
            yield h
        finally:
            h.close()


def refused_password_repair(h: Host) -> str:
    """The daemon's refusal of PasswordAuthentication no, checked; its reason."""
    reasons = [a["REASON"] for a in h.alerts("lockout_guard")
               if a.get("SETTING") == "passwordauthentication"]
    assert reasons, h.alerts("lockout_guard")
    assert h.sshd_T()["passwordauthentication"] == "yes"
    return reasons[0]


def repair_by_hand(h: Host) -> None:
    """What the old guard let the daemon do: passwords off, then sshd re-reads."""
    if h.daemon is not None:
        h.daemon.stop()
        h.daemon = None
    h.config("PasswordAuthentication no\n")
    h.hup()
    assert h.sshd_T()["passwordauthentication"] == "no"


def test_pubkey_off_with_a_stale_key_file(host: Host):
    # Before: PubkeyAuthentication no; admin logs in with a password and has an old key
    # file the old guard counted.
    key = host.user("admin", password=True, key_options="")
    host.config("PubkeyAuthentication no\nPasswordAuthentication yes\n")
    host.start_sshd()
    assert host.password_login("admin") == "admin"
    host.guard()
    reason = refused_password_repair(host)
    assert "admin: PubkeyAuthentication no" in reason
    assert host.password_login("admin") == "admin"
    repair_by_hand(host)
    assert host.password_login("admin") is None
    assert host.key_login("admin", key) is None  # nobody could log in


def test_forced_command_keys_while_the_admin_uses_a_password(host: Host):
    git = host.user("git", key_options='command="echo forced-only",restrict')
    host.user("admin", password=True)
    host.config("PasswordAuthentication yes\n")
    host.start_sshd()
    assert host.password_login("admin") == "admin"
    host.guard()
    reason = refused_password_repair(host)
    assert "none usable (command=)" in reason.split("git: ")[1]
    assert host.password_login("admin") == "admin"
    repair_by_hand(host)
    assert host.password_login("admin") is None
    assert host.key_login("git", git) == "forced-only"  # the forced command, never a shell


def test_allow_users_admin_while_only_another_account_holds_a_key(host: Host):
    bob = host.user("bob", key_options="")
    host.user("admin", password=True)
    host.config("AllowUsers admin\nPasswordAuthentication yes\n")
    host.start_sshd()
    assert host.password_login("admin") == "admin"
    host.guard()
    reason = refused_password_repair(host)
    assert "bob: not in AllowUsers" in reason
    assert host.password_login("admin") == "admin"
    repair_by_hand(host)
    assert host.password_login("admin") is None
    assert host.key_login("bob", bob) is None  # nobody could log in


def test_match_user_admin_needs_publickey_and_password(host: Host):
    key = host.user("admin", password=True, key_options="")
    host.config("PasswordAuthentication yes\n")
    p = host.sb.path("/etc/ssh/sshd_config")
    p.write_text(p.read_text() + "\nMatch User admin\n"
                 "    AuthenticationMethods publickey,password\n")
    host.start_sshd()
    assert host.key_login("admin", key) is None           # the key alone is not enough
    assert host.password_login("admin", key) == "admin"   # key, then password
    host.guard()
    reason = refused_password_repair(host)
    assert "AuthenticationMethods publickey,password" in reason
    assert host.password_login("admin", key) == "admin"
    repair_by_hand(host)
    assert host.password_login("admin", key) is None
    assert host.key_login("admin", key) is None  # nobody could log in


def test_a_usable_key_lets_the_repair_through(host: Host):
    # The control: an admin with a plain key loses nothing when passwords go off.
    key = host.user("admin", password=True, key_options="")
    host.config("PasswordAuthentication yes\n")
    host.start_sshd()
    host.daemon = DaemonProc(host.sb, host.logdir / "daemon.log").start()
    wait_for(lambda: host.sshd_T()["passwordauthentication"] == "no", 20,
             what="passwords to be turned off")
    wait_for(lambda: host.sb.listening(22), 10, what="sshd after the restart")
    assert host.alerts("lockout_guard") == []
    assert host.key_login("admin", key) == "admin"

