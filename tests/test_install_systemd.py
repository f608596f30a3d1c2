"""The newcomer's first hour, for real: Debian booted with systemd as PID 1 in
systemd-nspawn (the machinery of tests/test_container.py), no network, install.sh from this
checkout with --wheelhouse (the hash-checked pins, no package index):

1. `install.sh --audit` previews what the daemon would change (the sshd_config diff, root's
   lock, the lockout guard, the ports) and starts it in audit mode: nothing changes;
2. switching to enforce (the config key, then `systemctl reload`) makes the planned edits;
   three drifts within a minute are each repaired, with no revert-war pause (our own
   repairs at start and reload do not count); a fourth pauses, and status, the alert and
   the log say until when, by whom and how to resume; the pause survives a restart;
   `sshguardd resume` repairs at once;
3. re-running install.sh with newer code is an upgrade that takes: the daemon is restarted
   onto it, says so with both versions, and keeps the config; re-running with the same code
   does not restart it;
4. `--uninstall` lifts the bans, and a reinstall does not bring them back; `--purge`
   removes the rest.
The install and upgrade times are printed (pytest -s shows them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshguardd import __version__
from sshguardd.demo.sandbox import wait_for

# The booted-container helpers live with the container test (same directory on sys.path).
from test_container import Container, ensure_rootfs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.container, pytest.mark.e2e]
OFFLINE = "--wheelhouse /wheelhouse"
BANNED = "192.0.2.77"
NEWER = "0.1.1"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    debs = sorted((ROOT / "build/debs").glob("python3-systemd_*.deb"))
    assert debs, "build/debs/python3-systemd_*.deb missing: scripts/test.sh fetches it"
    wheelhouse = ROOT / "build/wheelhouse"
    assert any(wheelhouse.glob("pydantic-*.whl")), "run packaging/wheelhouse.sh"
    work = tmp_path_factory.mktemp("install-systemd")
    c = Container(ensure_rootfs(), f"sshgd-install-{os.getpid()}", work,
                  binds_ro=[(ROOT, "/src"), (wheelhouse, "/wheelhouse"),
                            (debs[-1].parent, "/debs")])
    try:
        c.start()
        # What apt-get would have installed, had the container a network.
        c.sh(f"dpkg -i /debs/{debs[-1].name}", check=True)
        # An administrator with a key, so turning password logins off locks nobody out.
        c.sh("""
            useradd -m -s /bin/bash admin
            ssh-keygen -q -t ed25519 -N '' -f /root/admin_key
            install -d -m 0700 -o admin -g admin /home/admin/.ssh
            install -m 0600 -o admin -g admin /root/admin_key.pub /home/admin/.ssh/authorized_keys
        """, check=True)
        yield c
    finally:
        c.stop()


def _effective(c: Container) -> str:
    # "" while ssh.service restarts (its RuntimeDirectory /run/sshd is briefly gone).
    return c.run(["sshd", "-T", "-C", "user=root,host=x,addr=192.0.2.9"]).stdout


def _status(c: Container) -> dict:
    return json.loads(c.run(["sshguardd", "status", "--json"], check=True).stdout)


def _banned(c: Container) -> bool:
    r = c.run(["nft", "-j", "list", "table", "inet", "sshguardd"])
    return r.returncode == 0 and f'"{BANNED}"' in r.stdout


def test_audit_install_previews_and_changes_nothing(host: Container) -> None:
    c = host
    before = c.run(["cat", "/etc/ssh/sshd_config"], check=True).stdout
    t0 = time.monotonic()
    r = c.sh(f"/src/install.sh --audit {OFFLINE}", timeout=600)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\nfirst install (install.sh --audit --wheelhouse, no network): {took:.1f} s")
    out = r.stdout
    # The preview: the planned edits as a diff, root's lock, the lockout guard, the ports.
    assert 'drift.mode = "audit": sshguardd only alerts' in out, out
    assert "+PermitRootLogin no" in out and "+PasswordAuthentication no" in out, out
    assert "lockout guard: holds nothing back" in out
    assert "root's password:" in out and "guards port(s) 22 (from sshd -T)" in out
    assert 'to enforce: mode = "enforce" in [drift]' in out
    assert out.index("+PermitRootLogin no") < out.index("sshguardd is enabled and running")
    assert "will make these changes" not in out  # no claim of enforcing (issue item 9)
    assert 'mode = "audit"' in c.run(["cat", "/etc/sshguardd/config.toml"]).stdout
    s = c.show("sshguardd", "ActiveState", "SubState")
    assert (s["ActiveState"], s["SubState"]) == ("active", "running"), s
    assert _status(c)["drift_mode"] == "audit"
    assert c.run(["cat", "/etc/ssh/sshd_config"]).stdout == before
    # check --diff shows the same plan at any time, and exits 1: there is something to do.
    r = c.run(["sshguardd", "check", "--diff"])
    assert r.returncode == 1 and "+PermitRootLogin no" in r.stdout, r.stdout + r.stderr


def test_switching_to_enforce_makes_the_planned_edits(host: Container) -> None:
    c = host
    c.sh("sed -i 's/^mode = \"audit\"/mode = \"enforce\"/' /etc/sshguardd/config.toml",
         check=True)
    c.run(["systemctl", "reload", "sshguardd"], check=True)
    wait_for(lambda: "permitrootlogin no" in (e := _effective(c))
             and "passwordauthentication no" in e, timeout=30, interval=0.2,
             what="the enforced settings")
    assert _status(c)["drift_mode"] == "enforce"
    r = c.run(["sshguardd", "check", "--diff"])
    assert r.returncode == 0 and "sshd_config: no change" in r.stdout, r.stdout


def _drift_root_login(c: Container) -> None:
    # As an admin's `sed -i` makes it: a new first line, which wins.
    c.sh("sed -i '1i PermitRootLogin yes' /etc/ssh/sshd_config", check=True)


def _root_login_off(c: Container) -> bool:
    return "permitrootlogin no" in _effective(c) and not c.run(
        ["head", "-1", "/etc/ssh/sshd_config"]).stdout.startswith("PermitRootLogin yes")


def test_three_drifts_within_a_minute_are_repaired_without_a_pause(host: Container) -> None:
    c = host
    t0 = time.monotonic()
    for i in range(3):
        _drift_root_login(c)
        wait_for(lambda: _root_login_off(c), timeout=30, interval=0.1,
                 what=f"repair of drift {i + 1}")
    assert time.monotonic() - t0 < 60
    assert _status(c)["repairs_paused"] == []
    log = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "sshguardd"]).stdout
    assert "revert war" not in log
    # Each repair is one log line (the alert), not two.
    assert "sshguardd.daemon.drift_guard: repaired" not in log
    assert log.count("repaired permitrootlogin in /etc/ssh/sshd_config: yes -> no") >= 3

    # The fourth within the window is a revert war: paused, and it says so everywhere.
    _drift_root_login(c)
    wait_for(lambda: _status(c)["repairs_paused"], timeout=30, interval=0.2,
             what="the revert-war pause")
    [p] = _status(c)["repairs_paused"]
    assert (p["item"], p["file"], p["resume"]) == (
        "permitrootlogin", "/etc/ssh/sshd_config", "sshguardd resume permitrootlogin")
    text = c.run(["sshguardd", "status"], check=True).stdout
    assert "repairs paused  permitrootlogin in /etc/ssh/sshd_config until " in text, text
    assert "`sshguardd resume permitrootlogin` resumes now" in text
    log = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "sshguardd"]).stdout
    assert "repairs of it paused until " in log and "sshguardd resume permitrootlogin" in log
    # A restart keeps the pause, as a reload does.
    c.run(["systemctl", "restart", "sshguardd"], check=True)
    assert [q["item"] for q in _status(c)["repairs_paused"]] == ["permitrootlogin"]
    assert not _root_login_off(c)
    r = c.run(["sshguardd", "resume", "permitrootlogin"], check=True)
    assert r.stdout == "resumed repairs of permitrootlogin in /etc/ssh/sshd_config\n"
    wait_for(lambda: _root_login_off(c), timeout=30, interval=0.1, what="repair after resume")
    assert _status(c)["repairs_paused"] == []


def _newer_checkout(c: Container) -> str:
    c.sh(f"""
        rm -rf /tmp/newer && mkdir /tmp/newer && cd /src
        cp -r install.sh pyproject.toml README.md config.example.toml sshguardd packaging \
            docs /tmp/newer/
        sed -i 's/^version = "{__version__}"/version = "{NEWER}"/' /tmp/newer/pyproject.toml
        sed -i 's/^__version__ = "{__version__}"/__version__ = "{NEWER}"/' \
            /tmp/newer/sshguardd/__init__.py
    """, check=True)
    return "/tmp/newer"


def test_rerunning_install_with_newer_code_restarts_onto_it(host: Container) -> None:
    c = host
    c.write("/etc/sshguardd/config.toml",
            c.run(["cat", "/etc/sshguardd/config.toml"]).stdout + "# the admin's note\n")
    pid = c.show("sshguardd", "MainPID")["MainPID"]
    src = _newer_checkout(c)
    t0 = time.monotonic()
    r = c.sh(f"{src}/install.sh {OFFLINE}", timeout=600)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"\nupgrade (install.sh re-run with newer code, no network): {took:.1f} s")
    assert f"upgraded sshguardd {__version__} -> {NEWER}" in r.stdout, r.stdout
    assert f"restarted the daemon onto the new code: {__version__} -> {NEWER}" in r.stdout
    assert c.show("sshguardd", "MainPID")["MainPID"] != pid
    assert _status(c)["version"] == NEWER  # the new code is what runs
    assert f"sshguardd {NEWER}, pid" in r.stdout  # and install.sh showed it
    assert c.run(["cat", "/etc/sshguardd/config.toml"]).stdout.endswith("# the admin's note\n")

    # The same code again: nothing to restart.
    pid = c.show("sshguardd", "MainPID")["MainPID"]
    r = c.sh(f"{src}/install.sh {OFFLINE}", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the running daemon already runs this code: not restarted" in r.stdout, r.stdout
    assert c.show("sshguardd", "MainPID")["MainPID"] == pid


def test_uninstall_lifts_bans_and_reinstall_keeps_them_lifted(host: Container) -> None:
    c = host
    c.run(["sshguardd", "ban", BANNED], check=True)
    wait_for(lambda: _banned(c), timeout=20, what="the manual ban in nft")
    r = c.sh("/src/install.sh --uninstall", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lifted its bans" in r.stdout
    assert c.run(["nft", "list", "table", "inet", "sshguardd"]).returncode != 0
    r = c.sh(f"/src/install.sh {OFFLINE}", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keeping the existing /etc/sshguardd/config.toml (drift guard: enforce)" in r.stdout
    assert _status(c)["bans_active"] == 0
    assert not _banned(c)

    r = c.sh("/src/install.sh --uninstall --purge", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    s = c.show("sshguardd", "LoadState", "ActiveState")
    assert s == {"LoadState": "not-found", "ActiveState": "inactive"}, s
    for path in ("/opt/sshguardd", "/usr/bin/sshguardd", "/etc/sshguardd", "/var/lib/sshguardd"):
        assert c.run(["test", "-e", path]).returncode != 0, path
