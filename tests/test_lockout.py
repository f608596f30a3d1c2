"""The lockout guard's pure judgment (sshguardd.drift.lockout, lockout_keys) on data, and
the accounts effect (sshguardd.effects.accounts) on real hostile files in a temp dir."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sshguardd.drift import lockout
from sshguardd.effects import accounts
from sshguardd.effects.sshd import Sshd

# A syntactically valid ed25519 public key (the blob names its type).
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "someone@example")
EFF = {"pubkeyauthentication": "yes", "passwordauthentication": "no",
       "kbdinteractiveauthentication": "no", "usepam": "yes", "permitrootlogin": "no",
       "authenticationmethods": "any", "strictmodes": "yes", "permitemptypasswords": "no",
       "authorizedkeysfile": ".ssh/authorized_keys .ssh/authorized_keys2",
       "authorizedkeyscommand": "none", "authorizedkeyscommanduser": "none",
       "trustedusercakeys": "none", "forcecommand": "none", "chrootdirectory": "none",
       "hostbasedauthentication": "no", "gssapiauthentication": "no"}
ADMIN = lockout.Account("admin", 1000, "/home/admin", "/bin/bash", ("admin",), True,
                        "usable")
PROBE = {"host": "192.0.2.1", "addr": "192.0.2.1", "now": 1_800_000_000.0}


def judge(line: str | None = KEY, account: lockout.Account = ADMIN, **eff: str):
    files = [] if line is None else [lockout.KeyFile(
        "/home/admin/.ssh/authorized_keys", line + "\n", "",
        lockout.PathStat("/home/admin/.ssh/authorized_keys", account.uid, 0o100600),
        (lockout.PathStat("/home/admin/.ssh", account.uid, 0o40700),
         lockout.PathStat("/home/admin", account.uid, 0o40755)))]
    return lockout.access(account, {**EFF, **eff}, files, **PROBE)


@pytest.mark.parametrize("line, usable", [
    (KEY, True),
    ("  " + KEY, True),
    ("# " + KEY, False),
    ('command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"" ' + KEY, False),
    ("restrict " + KEY, False),
    ("restrict,pty " + KEY, True),
    ("pty,restrict " + KEY, False),          # later wins: restrict turns the pty off again
    ("no-pty " + KEY, False),
    ("no-port-forwarding,no-X11-forwarding,no-agent-forwarding " + KEY, True),
    ('from="192.0.2.0/24" ' + KEY, True),
    ('from="10.0.0.0/8" ' + KEY, False),
    ('from="*,!192.0.2.1" ' + KEY, False),
    ('from="192.0.2.*" ' + KEY, True),
    ('expiry-time="20200101" ' + KEY, False),
    ('expiry-time="29991231" ' + KEY, True),
    ("bogus-option " + KEY, False),          # sshd rejects unknown options
    ('command="a",command="b" ' + KEY, False),
    ('from="unterminated ' + KEY, False),
    ("restrict, " + KEY, False),             # a blank after the comma ends the options
    ("RESTRICT,PTY " + KEY, True),           # option names are case-insensitive
    ('environment="NOEQUALS" ' + KEY, False),
    ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x", False),  # blob of another type
    ("ssh-dss " + KEY.split()[1], False),
])
def test_key_lines_as_sshd_reads_them(line: str, usable: bool):
    assert bool(judge(line).ways) is usable, judge(line)


def test_forced_commands_only_root():
    root = lockout.Account("root", 0, "/root", "/bin/bash", ("root",), True, "locked")
    fco = {"permitrootlogin": "forced-commands-only"}
    assert not judge(KEY, root, **fco).ways
    assert not judge('command="backup" ' + KEY, root, **fco).ways  # no admin path
    assert judge(KEY, root, permitrootlogin="without-password").ways
    assert "PermitRootLogin no" in judge(KEY, root).why_not


def test_sshd_access_lists():
    assert "not in AllowUsers" in judge(allowusers="bob").why_not
    assert judge(allowusers="bob\nadmin@192.0.2.*").ways
    assert not judge(allowusers="admin@10.*").ways
    assert "DenyUsers" in judge(denyusers="adm?n").why_not
    assert "not in AllowGroups" in judge(allowgroups="wheel").why_not
    assert "in DenyGroups" in judge(denygroups="adm*").why_not


def test_authentication_methods_need_every_step():
    both = {"authenticationmethods": "publickey,password"}
    w = judge(**both)
    assert not w.ways and "AuthenticationMethods publickey,password" in w.why_not
    assert judge(passwordauthentication="yes", **both).ways
    assert judge(authenticationmethods="publickey,password publickey").ways
    kbd = {"authenticationmethods": "publickey,keyboard-interactive:pam",
           "kbdinteractiveauthentication": "yes"}
    assert judge(**kbd).ways and not judge(usepam="no", **kbd).ways


def test_other_ways_in_and_blockers():
    akc = {"authorizedkeyscommand": "/usr/share/ec2-instance-connect/eic_run_authorized_keys"
           " %u %f", "authorizedkeyscommanduser": "ec2-instance-connect"}
    assert judge(None, **akc).ways                    # EC2 Instance Connect counts
    assert not judge(None, pubkeyauthentication="no", **akc).ways
    assert judge(None, trustedusercakeys="/etc/ssh/ca.pub").ways
    assert not judge(forcecommand="internal-sftp").ways
    assert not judge(chrootdirectory="/srv/%u").ways
    assert judge(None, passwordauthentication="yes").ways
    assert not judge(None, account=lockout.Account(
        "admin", 1000, "/home/admin", "/bin/bash", (), True, "locked"),
        passwordauthentication="yes").ways
    locked = lockout.Account("admin", 1000, "/home/admin", "/bin/bash", (), True, "locked",
                             locked=True)
    assert judge(KEY, locked).ways                    # PAM: a '!' lock does not stop keys
    assert "UsePAM no" in judge(KEY, locked, usepam="no").why_not


def test_strict_modes():
    bad = lockout.KeyFile("/home/admin/.ssh/authorized_keys", KEY, "",
                          lockout.PathStat("/home/admin/.ssh/authorized_keys", 1000, 0o100666))
    eff = {**EFF}
    assert "StrictModes" in lockout.access(ADMIN, eff, [bad], **PROBE).why_not
    assert lockout.access(ADMIN, {**eff, "strictmodes": "no"}, [bad], **PROBE).ways
    other = lockout.KeyFile("/home/admin/.ssh/authorized_keys", KEY, "",
                            lockout.PathStat("/home/admin/.ssh/authorized_keys", 1001, 0o100600))
    assert "owned by uid 1001" in lockout.access(ADMIN, eff, [other], **PROBE).why_not


def test_parse_accounts_and_order():
    passwd = ("root:x:0:0:root:/root:/bin/bash\nsync:x:4:65534:sync:/bin:/bin/sync\n"
              "admin:x:1000:1000::/home/admin:/bin/bash\nold:x:1001:1001::/home/old:/bin/bash\n"
              "svc:x:998:998::/srv:/usr/sbin/nologin\n")
    shadow = ("root:$y$j9T$abc$0123456789abcdefghijklmnopqrstuvwxyz012:19000::::::\n"
              "admin:!$y$j9T$abc$0123456789abcdefghij:19000::::::\n"
              "old:$y$j9T$abc$0123456789abcdefghijklmnop:19000:::::19500:\n")
    group = "admin:x:1000:\nwheel:x:10:admin,old\n"
    accs = {a.name: a for a in lockout.parse_accounts(
        passwd, group, shadow, "/bin/sh\n/bin/bash\n", today=20000, lock_root=True)}
    assert accs["root"].password == "locked"           # the shadow policy will lock it
    assert accs["admin"].locked and accs["admin"].groups == ("admin", "wheel")
    assert accs["old"].expired and not accs["sync"].login_shell
    assert [a.name for a in lockout.probe_order(accs.values())] == ["admin", "root"]
    assert lockout.key_file_paths({"authorizedkeysfile": "/etc/ssh/keys/%u.%U %h/k%%"},
                                  accs["admin"]) == ["/etc/ssh/keys/admin.1000",
                                                     "/home/admin/k%"]


def test_reason_removes_last_way_or_passwords_while_blind():
    none = [lockout.Access("admin", (), "no authorized key")]
    had = [lockout.Access("admin", ("password",))]
    assert lockout.reason("x11forwarding", none, none) is None
    assert lockout.reason("permitrootlogin", none, none) is None
    assert "lock everyone out" in lockout.reason("passwordauthentication", none, none)
    r = lockout.reason("permitrootlogin", none, [lockout.Access("root", ("key in /root",))])
    assert r and r.startswith("root is the only account")
    assert lockout.reason("pubkeyauthentication", none, had)
    assert lockout.reason("passwordauthentication", had, None) is None


# ---------------------------------------------------------------------------- the effect

def hostile_home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A passwd file and one home per hostile kind of authorized_keys."""
    lines = []
    kinds = {}
    for i, kind in enumerate(("fifo", "zero", "huge", "socket", "shadowlink", "good")):
        home = tmp_path / "home" / kind
        (home / ".ssh").mkdir(parents=True)
        ak = home / ".ssh" / "authorized_keys"
        if kind == "fifo":
            os.mkfifo(ak)
        elif kind == "zero":
            ak.symlink_to("/dev/zero")
        elif kind == "huge":
            with open(ak, "wb") as f:
                f.truncate(4 << 30)  # sparse 4 GiB
        elif kind == "socket":
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(ak))
            s.close()
        elif kind == "shadowlink":
            ak.symlink_to("/etc/shadow")
        else:
            ak.write_text(KEY + "\n")
        kinds[kind] = str(ak)
        lines.append(f"{kind}:x:{2000 + i}:{2000 + i}::{home}:/bin/bash")
    passwd = tmp_path / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    return passwd, kinds


def test_hostile_key_files_are_refused_quickly(tmp_path: Path):
    passwd, kinds = hostile_home(tmp_path)
    src = accounts.Accounts(Sshd(), passwd=passwd)
    accs = {a.name: a for a in src.accounts("", today=20000, lock_root=False)}
    started = time.monotonic()
    got = {k: src.key_files(accs[k], [p])[0] for k, p in kinds.items()}
    assert time.monotonic() - started < 1.0
    assert got["fifo"].problem == "is a FIFO (not read)"
    assert got["zero"].problem == got["shadowlink"].problem == "is a symlink (not read)"
    assert got["huge"].problem.startswith("is larger than")
    assert got["socket"].problem == "is a socket (not read)"
    assert got["good"].text == KEY + "\n" and got["good"].stat is not None
    assert [p.path for p in got["good"].parents] == [str(tmp_path / "home/good/.ssh"),
                                                    str(tmp_path / "home/good")]


def test_a_stalled_read_is_abandoned_at_its_deadline(tmp_path: Path):
    """A read that never returns (here: a FIFO opened without O_NONBLOCK by a stand-in
    reader, as a FUSE or NFS home would stall) costs its deadline, then nothing."""
    passwd, kinds = hostile_home(tmp_path)
    src = accounts.Accounts(Sshd(["true"]), passwd=passwd, read_timeout=0.2)
    acc = src.accounts("", today=0, lock_root=False)[0]
    gate = threading.Event()
    real = accounts.read_regular
    try:
        accounts.read_regular = lambda path, cap: (gate.wait(), real(path, cap))[1]  # type: ignore[assignment]
        for _ in range(accounts.MAX_STUCK + 2):
            t = time.monotonic()
            (kf,) = src.key_files(acc, [kinds["good"]])
            assert kf.text is None and "not read" in kf.problem
            assert time.monotonic() - t < 0.2 + 0.5
    finally:
        gate.set()
        accounts.read_regular = real
    assert src.stalls == accounts.MAX_STUCK


def test_sshd_is_asked_with_the_probe(tmp_path: Path):
    key = tmp_path / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cfg = tmp_path / "sshd_config"
    cfg.write_text(f"HostKey {key}\nPasswordAuthentication no\nMatch User admin\n"
                   "  PasswordAuthentication yes\n  AuthenticationMethods publickey,password\n")
    src = accounts.Accounts(Sshd(), passwd=tmp_path / "x")
    eff = src.ask(str(cfg), ADMIN)
    assert eff["passwordauthentication"] == "yes"
    assert eff["authenticationmethods"] == "publickey,password"
    other = src.ask(str(cfg), lockout.Account("bob", 1001, "/home/bob", "/bin/bash"))
    assert other["passwordauthentication"] == "no"
