"""The drift guard on real files in a temp dir, validated by a real `sshd -t -f`.

sshd runs through tests/data/sshd-private-run (a private mount namespace with its own /run,
since sshd wants /run/sshd); the restart command is a script that records each call, or
`false` to make restarts fail. Alerts are the real Alerts with a journal `send` that keeps
the messages in a list; metrics are the real Metrics with a private registry.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from systemd import journal

from sshguardd import config, contracts

from sshguardd.daemon import drift_guard as drift

from sshguardd.effects import sshd as service

from sshguardd.effects import writer_hint as writers
from sshguardd.effects.alerts import Alerts
from sshguardd.effects.metrics import Metrics

DATA = Path(__file__).parent / "data"
HASH = "$y$j9T$abcdefghijklmnopqrstu.$ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg"


class Box:
    """A fake root: etc/ssh with a real host key, etc/shadow, etc/passwd, homes."""

    def __init__(self, root: Path, **drift_cfg):
        self.root = root
        self.etc = root / "etc"
        self.ssh = self.etc / "ssh"
        (self.ssh / "sshd_config.d").mkdir(parents=True)
        self.key = self.ssh / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        self.main = self.ssh / "sshd_config"
        self.main.write_text(
            f"# test sshd_config\nInclude {self.ssh}/sshd_config.d/*.conf\n"
            f"HostKey {self.key}\nPidFile {root}/sshd.pid\n"
            "KbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\n"
            "PermitRootLogin no\nPasswordAuthentication no\nPermitEmptyPasswords no\n")
        os.chmod(self.main, 0o644)
        self.home = root / "home" / "alice"
        (self.home / ".ssh").mkdir(parents=True)
        self.passwd = self.etc / "passwd"
        self.passwd.write_text(
            f"root:x:0:0:root:{root}/root:/bin/bash\n"
            "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
            f"alice:x:1000:1000:Alice:{self.home}:/bin/bash\n")
        self.shadow = self.etc / "shadow"
        self.shadow.write_text(f"root:*:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n"
                               f"alice:{HASH}:19701:0:99999:7:::\n")
        os.chmod(self.shadow, 0o640)
        self.restarts = root / "restarts.log"
        restart = root / "restart-sshd"
        restart.write_text(f"#!/bin/sh\necho restart >> {self.restarts}\n")
        restart.chmod(0o755)
        self.sent: list[dict] = []
        self.metrics = Metrics()
        self.now = 1_000_000.0
        dc = {"sshd_config": str(self.main), "shadow": str(self.shadow),
              "restart_command": [str(restart)], **drift_cfg}
        self.cfg = config.Config.model_validate(
            {"daemon": {"state_dir": str(root / "state")}, "drift": dc})
        self.runner = service.Sshd([str(DATA / "sshd-private-run")],
                                   restart=self.cfg.drift.restart_command or [str(restart)])
        # The journal consulted for a revert war's writer: a real journal file written by
        # systemd-journal-remote (see write_journal), empty until a test adds entries.
        self.journal_dir = root / "journal"
        self.journal_dir.mkdir()
        self.guard = drift.DriftGuard(
            self.cfg, alerts=Alerts(send=lambda m, **f: self.sent.append({"MESSAGE": m, **f})),
            metrics=self.metrics, runner=self.runner, passwd=self.passwd,
            ssh_dir=str(self.ssh), clock=lambda: self.now,
            writer_hint=lambda since, tools: writers.journal_writer(
                since, lambda: journal.Reader(path=str(self.journal_dir)), tools=tools))

    def write_journal(self, *entries: dict[str, str], at: float) -> None:
        export = self.root / "writers.export"
        with open(export, "w", encoding="utf-8") as f:
            for i, fields in enumerate(entries):
                f.write(f"__REALTIME_TIMESTAMP={int((at + i) * 1_000_000)}\n"
                        f"__MONOTONIC_TIMESTAMP={i + 1}\n_BOOT_ID={'0' * 32}\n")
                f.writelines(f"{k}={v}\n" for k, v in fields.items())
                f.write("\n")
        subprocess.run(["/lib/systemd/systemd-journal-remote",
                        f"--output={self.journal_dir}/w.journal", str(export)],
                       check=True, capture_output=True)

    def give_alice_a_key(self) -> None:
        pub = Path(f"{self.key}.pub").read_text()
        (self.home / ".ssh" / "authorized_keys").write_text(pub)

    def alerts(self, kind: str) -> list[dict]:
        return [a for a in self.sent if a.get("SSHGUARDD_ALERT") == kind]

    def restart_count(self) -> int:
        return len(self.restarts.read_text().splitlines()) if self.restarts.exists() else 0

    def effective(self) -> dict[str, str]:
        return self.runner.effective(self.main)

    def metric(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(f"sshguardd_{name}", labels) or 0.0


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def actions(outcomes) -> dict[str, str]:
    return {o.item: o.action for o in outcomes if o.action != "ok"}


def test_compliant_host_is_left_alone(box: Box):
    box.give_alice_a_key()
    before = box.main.read_bytes()
    assert actions(box.guard.check_all("start")) == {}
    assert box.main.read_bytes() == before and box.restart_count() == 0
    assert box.sent == []


def test_sed_style_drift_is_reverted_with_every_other_byte_kept(box: Box):
    box.give_alice_a_key()
    drifted = box.main.read_text().replace("PermitRootLogin no", "PermitRootLogin yes")
    box.main.write_text(drifted)
    os.chown(box.main, 0, 4)
    os.chmod(box.main, 0o640)
    out = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert actions(out) == {"permitrootlogin": "repaired"}
    assert box.main.read_text() == drifted.replace("PermitRootLogin yes", "PermitRootLogin no")
    st = box.main.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 0, 4)
    assert box.effective()["permitrootlogin"] == "no"
    assert box.restart_count() == 1
    # A copy of the drifted file and a unified diff are kept.
    kept = sorted((box.root / "state" / "drift").iterdir())
    assert [p.suffix for p in kept] == [".diff", ".drifted"]
    assert kept[1].read_text() == drifted
    assert "-PermitRootLogin yes\n+PermitRootLogin no\n" in kept[0].read_text()
    assert [a["SETTING"] for a in box.alerts("drift")] == ["permitrootlogin"]
    assert len(box.alerts("repaired")) == 1
    assert box.metric("drift_repaired_total", setting="permitrootlogin",
                      file=str(box.main)) == 1
    assert box.metric("sshd_restarts_total", result="success") == 1
    # The watcher then reports our own write: ignored, nothing is restarted again.
    again = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert [o.action for o in again] == ["ignored"]
    assert box.restart_count() == 1


def test_dropin_ahead_of_main_file_is_neutralised_in_the_dropin(box: Box):
    box.give_alice_a_key()
    main_before = box.main.read_bytes()
    dropin = box.ssh / "sshd_config.d" / "50-cloud-init.conf"
    dropin.write_text("# written by cloud-init\nPasswordAuthentication yes\n")
    assert box.guard.is_relevant(str(dropin))
    assert box.effective()["passwordauthentication"] == "yes"
    out = box.guard.handle(contracts.FileChanged(str(dropin), box.now))
    assert actions(out) == {"passwordauthentication": "repaired"}
    assert dropin.read_text() == "# written by cloud-init\nPasswordAuthentication no\n"
    assert box.main.read_bytes() == main_before
    assert box.effective()["passwordauthentication"] == "no"


def test_missing_setting_added_where_it_wins(box: Box):
    box.give_alice_a_key()
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no\n", "")
                        + "Match User bob\n  X11Forwarding no\n")
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "repaired"}
    assert "PermitRootLogin no\nMatch User bob\n" in box.main.read_text()
    assert box.effective()["permitrootlogin"] == "no"


def test_match_block_reenabling_root_login_is_repaired(box: Box):
    box.give_alice_a_key()
    box.main.write_text(box.main.read_text() + "Match Address 10.0.0.0/8\n"
                        "  PermitRootLogin yes\n")
    ctx = {"user": "root", "host": "h", "addr": "10.1.2.3"}
    assert box.runner.effective(box.main, ctx)["permitrootlogin"] == "yes"
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin (Match Address 10.0.0.0/8)": "repaired"}
    assert box.runner.effective(box.main, ctx)["permitrootlogin"] == "no"


def test_config_sshd_rejects_is_not_touched_and_alerted_once(box: Box):
    box.give_alice_a_key()
    broken = box.main.read_text().replace("PermitRootLogin no", "PermitRootLogin yes") \
        + "NoSuchKeyword at all\n"
    box.main.write_text(broken)
    for _ in range(2):
        out = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
        assert actions(out) == {"permitrootlogin": "failed"}
    assert box.main.read_text() == broken and box.restart_count() == 0
    (alert,) = box.alerts("repair_failed")
    assert alert["STEP"] == "validate" and "NoSuchKeyword" in alert["STDERR"]
    assert f"{box.main} (candidate): line 11: Bad configuration option" in alert["STDERR"]
    # Broken with nothing to repair: alerted once too.
    box.main.write_text(broken.replace("PermitRootLogin yes", "PermitRootLogin no"))
    for _ in range(2):
        out = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
        assert actions(out) == {"sshd_config": "failed"}
    assert len(box.alerts("repair_failed")) == 2
    assert box.restart_count() == 0


def test_invalid_value_of_a_policy_keyword_is_repaired(box: Box):
    # A bad value makes sshd reject the file; putting the policy's value back fixes it.
    box.give_alice_a_key()
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin maybe"))
    with pytest.raises(service.ServiceError):
        box.runner.test(box.main)
    out = box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert actions(out) == {"permitrootlogin": "repaired"}
    assert box.effective()["permitrootlogin"] == "no" and box.restart_count() == 1


def test_candidate_rejected_by_sshd_changes_nothing(tmp_path: Path):
    box = Box(tmp_path, sshd_settings={"MaxAuthTries": "lots"})
    box.give_alice_a_key()
    before = box.main.read_bytes()
    out = box.guard.check_all("start")
    assert actions(out) == {"maxauthtries": "failed"}
    assert box.main.read_bytes() == before and box.restart_count() == 0
    (alert,) = box.alerts("repair_failed")
    assert alert["STEP"] == "validate"
    assert f"{box.main} (candidate) line 11: MaxAuthTries integer value invalid" \
        in alert["STDERR"]
    assert box.metric("repair_failures_total", step="validate") == 1


def test_failed_restart_restores_the_files(tmp_path: Path):
    box = Box(tmp_path, restart_command=["false"])
    box.runner = box.guard.runner = service.Sshd([str(DATA / "sshd-private-run")],
                                                 restart=["false"])
    box.give_alice_a_key()
    drifted = box.main.read_text().replace("PermitRootLogin no", "PermitRootLogin yes")
    box.main.write_text(drifted)
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "failed"}
    assert box.main.read_text() == drifted
    (alert,) = box.alerts("restart_failed")
    assert alert["COMMAND"] == "false"
    assert box.metric("sshd_restarts_total", result="failure") == 1


def test_lockout_guard_refuses_without_keys(box: Box):
    box.main.write_text(box.main.read_text().replace(
        "PasswordAuthentication no", "PasswordAuthentication yes"))
    out = box.guard.check_all("start")
    assert actions(out) == {"passwordauthentication": "refused"}
    assert box.effective()["passwordauthentication"] == "yes"
    (alert,) = box.alerts("lockout_guard")
    assert "no account that can log in has an authorized key" in alert["REASON"]
    assert box.metric("lockout_guard_refusals_total") == 1
    # Root's keys do not count while the policy forbids root logins.
    root_ssh = box.root / "root" / ".ssh"
    root_ssh.mkdir(parents=True)
    (root_ssh / "authorized_keys").write_text(Path(f"{box.key}.pub").read_text())
    assert actions(box.guard.check_all("again")) == {"passwordauthentication": "refused"}
    # A key for a user who can log in lets the repair go ahead.
    box.give_alice_a_key()
    assert actions(box.guard.check_all("keys added")) == {"passwordauthentication": "repaired"}


def test_lockout_guard_accepts_authorized_keys_command(box: Box):
    box.main.write_text(box.main.read_text().replace(
        "PasswordAuthentication no", "PasswordAuthentication yes")
        + "AuthorizedKeysCommand /usr/bin/true\nAuthorizedKeysCommandUser nobody\n")
    assert actions(box.guard.check_all("start")) == {"passwordauthentication": "repaired"}


def test_revert_war_pauses_then_resumes(tmp_path: Path):
    box = Box(tmp_path, revert_war={"max_reverts": 3, "window": "10m", "pause": "1h"})
    box.give_alice_a_key()
    dropin = box.ssh / "sshd_config.d" / "50-cloud-init.conf"
    seen = []
    for i in range(5):
        box.now += 10
        dropin.write_text("# generated by cloud-init\nPermitRootLogin yes\n")
        seen.append(actions(box.guard.handle(
            contracts.FileChanged(str(dropin), box.now)))["permitrootlogin"])
    assert seen == ["repaired"] * 3 + ["paused"] * 2
    (war,) = box.alerts("revert_war")
    assert war["FILE"] == str(dropin) and war["WRITER"] == "cloud-init"
    assert war["REVERT_COUNT"] == "3"
    assert dropin.read_text().endswith("PermitRootLogin yes\n")  # left as the writer wants
    assert box.guard.next_wakeup() == pytest.approx(box.now - 10 + 3600)
    box.now += 3600
    assert actions(box.guard.check_all("pause over")) == {"permitrootlogin": "repaired"}
    assert box.guard.next_wakeup() == box.now + drift.RECHECK_INTERVAL


def test_pause_ends_even_if_the_drift_went_away(tmp_path: Path):
    box = Box(tmp_path, revert_war={"max_reverts": 1, "window": "10m", "pause": "1h"})
    box.give_alice_a_key()
    dropin = box.ssh / "sshd_config.d" / "50-cloud-init.conf"
    for _ in range(2):
        box.now += 1
        dropin.write_text("PermitRootLogin yes\n")
        box.guard.handle(contracts.FileChanged(str(dropin), box.now))
    assert box.guard.next_wakeup() == box.now + 3600
    dropin.unlink()  # the other writer gave up
    box.now += 3600
    assert actions(box.guard.check_all("pause over")) == {}
    # Nothing paused is left to wake the daemon every tick: only the periodic re-check.
    assert box.guard.next_wakeup() == box.now + drift.RECHECK_INTERVAL
    assert box.metric("revert_wars_total", setting="permitrootlogin", file=str(dropin)) == 1


def test_audit_mode_changes_nothing(tmp_path: Path):
    box = Box(tmp_path, mode="audit")
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    box.shadow.write_text(box.shadow.read_text().replace("root:*:", f"root:{HASH}:"))
    before = {p: p.read_bytes() for p in (box.main, box.shadow)}
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "drift", "root password": "drift"}
    assert {p: p.read_bytes() for p in before} == before
    assert box.restart_count() == 0
    assert len(box.alerts("drift")) == 2 and box.alerts("repaired") == []


def test_root_password_relocked_other_accounts_untouched(box: Box):
    box.give_alice_a_key()
    text = box.shadow.read_text().replace("root:*:", f"root:{HASH}:")
    text += f"bob:{HASH}:19800:0:99999:7:::\n"
    box.shadow.write_text(text)
    out = box.guard.handle(contracts.FileChanged(str(box.shadow), box.now))
    assert actions(out) == {"root password": "repaired"}
    assert box.shadow.read_text() == text.replace(f"root:{HASH}:", f"root:!{HASH}:")
    assert box.restart_count() == 0  # shadow needs no sshd restart
    assert all(HASH not in str(a) for a in box.sent)
    assert [o.action for o in box.guard.handle(
        contracts.FileChanged(str(box.shadow), box.now))] == ["ignored"]


def test_empty_password_alerted_not_changed_by_default(box: Box):
    text = box.shadow.read_text() + "eve::19800:0:99999:7:::\n"
    box.shadow.write_text(text)
    out = box.guard.check_all("start")
    assert actions(out) == {"empty passwords": "drift"}
    assert box.shadow.read_text() == text
    (alert,) = box.alerts("drift")
    assert alert["SETTING"] == "empty passwords" and "eve" in alert["MESSAGE"]


def test_watch_paths_and_relevance(box: Box):
    extra = box.root / "extra.d"
    extra.mkdir()
    (extra / "a.conf").write_text("X11Forwarding no\n")
    box.main.write_text(f"Include {extra}/*.conf\n" + box.main.read_text())
    paths = box.guard.watch_paths()
    assert paths == [box.ssh, extra, box.ssh / "sshd_config.d", box.etc]
    assert box.guard.is_relevant(str(extra / "new.conf"))
    assert not box.guard.is_relevant(str(extra / "new.txt"))
    assert not box.guard.is_relevant(str(box.ssh / "sshd_config.d" / ".tmp.conf"))
    assert not box.guard.is_relevant(str(box.etc / "hosts"))
    assert box.guard.is_relevant(str(box.shadow))


def _check(box: Box, capsys, *extra: str) -> tuple[int, str]:
    from sshguardd import cli

    cfg = box.root / "config.toml"
    cfg.write_text(f'[daemon]\nstate_dir = "{box.root}/state"\n[drift]\n'
                   f'sshd_config = "{box.main}"\nshadow = "{box.shadow}"\n'
                   f'sshd = "{DATA / "sshd-private-run"}"\n')
    rc = cli.main(["check", "--config", str(cfg), *extra])
    return rc, capsys.readouterr().out


def test_check_command_table_and_exit_codes(box: Box, capsys):
    rc, out = _check(box, capsys)
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["ITEM", "VALUE", "SOURCE", "RESULT"]
    assert any(l.split()[:4] == ["permitrootlogin", "no", f"{box.main}:8", "pass"]
               for l in lines)
    dropin = box.ssh / "sshd_config.d" / "50-cloud-init.conf"
    dropin.write_text("PasswordAuthentication yes\n")
    before = {p: p.read_bytes() for p in (box.main, dropin, box.shadow)}
    rc, out = _check(box, capsys, "--json")
    assert rc == 1
    import json
    doc = json.loads(out)
    assert doc["compliant"] is False
    bad = [i for i in doc["items"] if not i["ok"]]
    assert bad == [{"item": "passwordauthentication", "expected": "no", "value": "yes",
                    "source": f"{dropin}:1", "ok": False, "note": ""}]
    assert {p: p.read_bytes() for p in before} == before  # check changes nothing


def test_check_reports_config_sshd_rejects(box: Box, capsys):
    box.main.write_text(box.main.read_text() + "Bogus yes\n")
    rc, out = _check(box, capsys)
    assert rc == 1
    assert any(l.startswith("sshd accepts its config") and "FAIL" in l
               for l in out.splitlines())


def test_repair_sshd_does_not_confirm_is_rolled_back(tmp_path: Path):
    # sshd accepts "MaxAuthTries 03" but reports it as 3: the model's edit is not what the
    # policy says in sshd's own terms, so the files go back and nothing is restarted.
    box = Box(tmp_path, sshd_settings={"MaxAuthTries": "03"})
    box.give_alice_a_key()
    before = box.main.read_bytes()
    out = box.guard.check_all("start")
    assert actions(out) == {"maxauthtries": "failed"}
    assert box.main.read_bytes() == before and box.restart_count() == 0
    (alert,) = box.alerts("repair_failed")
    assert alert["STEP"] == "verify" and "maxauthtries 3, not 03" in alert["STDERR"]


def test_check_lists_match_blocks_with_sshd_probe(box: Box, capsys):
    box.main.write_text(box.main.read_text() + "Match User bob\n  PasswordAuthentication yes\n"
                        "Match User bob\n  PasswordAuthentication no\n")
    rc, out = _check(box, capsys, "--json")
    import json
    items = [i for i in json.loads(out)["items"]
             if i["item"] == "passwordauthentication (Match User bob)"]
    assert rc == 1
    assert [(i["value"], i["ok"], i["source"]) for i in items] == [
        ("yes", False, f"{box.main}:12"), ("no", True, f"{box.main}:14")]
    # sshd agrees for the first block; for the second, the first block wins for bob.
    assert items[0]["note"] == ""
    assert items[1]["note"].startswith("sshd -T -C user=bob,") and \
        items[1]["note"].endswith(" says yes")


def test_standing_drift_is_alerted_once(tmp_path: Path):
    box = Box(tmp_path, mode="audit")
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    for _ in range(3):
        box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert len(box.alerts("drift")) == 1
    assert box.metric("drift_detected_total", setting="permitrootlogin",
                      file=str(box.main)) == 1
    # Fixed by hand, then drifted again: a new alert.
    box.main.write_text(box.main.read_text().replace("PermitRootLogin yes",
                                                     "PermitRootLogin no"))
    box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    box.guard.handle(contracts.FileChanged(str(box.main), box.now))
    assert len(box.alerts("drift")) == 2


def test_symlinked_config_keeps_its_link(box: Box):
    box.give_alice_a_key()
    managed = box.root / "managed_sshd_config"
    managed.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                    "PermitRootLogin yes"))
    box.main.unlink()
    box.main.symlink_to(managed)
    assert actions(box.guard.check_all("start")) == {"permitrootlogin": "repaired"}
    assert box.main.is_symlink() and "PermitRootLogin no\n" in managed.read_text()


def test_lockout_guard_keeps_root_login_when_root_holds_the_only_key(box: Box):
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    root_ssh = box.root / "root" / ".ssh"
    root_ssh.mkdir(parents=True)
    (root_ssh / "authorized_keys").write_text(Path(f"{box.key}.pub").read_text())
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "refused"}
    (alert,) = box.alerts("lockout_guard")
    assert "root is the only account with an authorized key" in alert["REASON"]
    box.give_alice_a_key()
    assert actions(box.guard.check_all("keys added")) == {"permitrootlogin": "repaired"}


def test_policy_allowing_root_keys_is_not_guarded(tmp_path: Path):
    box = Box(tmp_path, sshd_settings={"PermitRootLogin": "prohibit-password"})
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no",
                                                     "PermitRootLogin yes"))
    root_ssh = box.root / "root" / ".ssh"
    root_ssh.mkdir(parents=True)
    (root_ssh / "authorized_keys").write_text(Path(f"{box.key}.pub").read_text())
    assert actions(box.guard.check_all("start")) == {"permitrootlogin": "repaired"}
    assert box.effective()["permitrootlogin"] == "without-password"


def test_revert_war_on_shadow_names_the_writer_from_the_journal(tmp_path: Path):
    box = Box(tmp_path, revert_war={"max_reverts": 2, "window": "10m", "pause": "1h"})
    box.write_journal(
        {"SYSLOG_IDENTIFIER": "usermod", "_PID": "4242",
         "MESSAGE": "change user 'root' password"},
        {"SYSLOG_IDENTIFIER": "sshd", "_PID": "77", "MESSAGE": "Accepted publickey"},
        at=box.now - 30)
    seen = []
    for _ in range(3):
        box.now += 1
        box.shadow.write_text(box.shadow.read_text().replace("root:!*:", "root:*:")
                              .replace("root:*:", f"root:{HASH}:")
                              .replace(f"root:!{HASH}:", f"root:{HASH}:"))
        seen.append(actions(box.guard.handle(
            contracts.FileChanged(str(box.shadow), box.now)))["root password"])
    assert seen == ["repaired", "repaired", "paused"]
    (war,) = box.alerts("revert_war")
    assert war["WRITER"] == "usermod (pid 4242)" and war["FILE"] == str(box.shadow)


def test_journal_writer_ignores_entries_before_the_window(tmp_path: Path):
    box = Box(tmp_path)
    box.write_journal({"SYSLOG_IDENTIFIER": "cloud-init", "_PID": "9", "MESSAGE": "x"},
                      {"SYSLOG_IDENTIFIER": "ansible-ansible.builtin.lineinfile",
                       "_PID": "10", "MESSAGE": "Invoked"}, at=1000.0)
    reader = lambda: journal.Reader(path=str(box.journal_dir))  # noqa: E731
    assert writers.journal_writer(999.0, reader) == "ansible-ansible.builtin.lineinfile (pid 10)"
    assert writers.journal_writer(1001.5, reader) is None
    box.write_journal({"SYSLOG_IDENTIFIER": "useradd", "_PID": "11", "MESSAGE": "new user"},
                      at=2000.0)
    # useradd never edits sshd_config: not blamed for it, even as the latest writer.
    assert writers.journal_writer(999.0, reader) == "ansible-ansible.builtin.lineinfile (pid 10)"
    assert writers.journal_writer(999.0, reader, tools=writers.SHADOW_WRITERS | {"useradd"}) \
        == "useradd (pid 11)"


def test_unenforceable_policy_keyword_is_reported_not_guessed(tmp_path: Path):
    box = Box(tmp_path, sshd_settings={"AllowUsers": "alice"})
    (alert,) = box.alerts("startup_problem")
    assert alert["WHAT"] == "drift policy" and "allowusers" in alert["DETAIL"]
    box.give_alice_a_key()
    before = box.main.read_bytes()
    assert actions(box.guard.check_all("start")) == {}
    assert box.main.read_bytes() == before


def test_restart_command_found_from_installed_unit(tmp_path: Path):
    debian, rhel = tmp_path / "debian", tmp_path / "rhel"
    debian.mkdir()
    rhel.mkdir()
    (debian / "ssh.service").write_text("[Unit]\n")
    (debian / "sshd.service").symlink_to(debian / "ssh.service")  # Debian's alias
    (rhel / "sshd.service").write_text("[Unit]\n")
    assert service.find_restart_command([str(debian)]) == ("systemctl", "restart",
                                                          "ssh.service")
    assert service.find_restart_command([str(tmp_path / "none"), str(rhel)]) == (
        "systemctl", "restart", "sshd.service")


def test_service_error_quotes_argv_status_and_stderr(box: Box):
    with pytest.raises(service.ServiceError) as err:
        service.Sshd([str(DATA / "sshd-private-run")]).test(box.root / "missing")
    assert err.value.argv[-2:] == ["-f", str(box.root / "missing")]
    assert err.value.returncode == 1 and "No such file or directory" in err.value.stderr
    assert str(err.value).startswith(f"{DATA / 'sshd-private-run'} -t -f ")
    with pytest.raises(service.ServiceError) as err:
        service.Sshd(restart=["/nonexistent/restart-sshd"]).restart()
    assert err.value.returncode == 127 and "No such file" in err.value.stderr
