"""sshd's command line from its systemd unit (issue 15 part 1): `-o` options in an
ExecStart override are judged with the real `sshd -T`, reported where they live, never
"repaired" in sshd_config (where the command line would beat the repair), and counted by
the lockout guard (EC2 Instance Connect on Ubuntu lives there).

Real files in a temp search path stand in for /etc/systemd/system and /lib/systemd/system
(this host's PID 1 is not systemd: the fallback walk); tests/test_container_unit.py runs
the same against a real systemd in nspawn.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drift_helpers import Box, actions
from sshguardd.commands import check
from sshguardd.daemon.command_line import CommandLines
from sshguardd.drift import sshd_cmdline
from sshguardd.drift.sshd_model import Location
from sshguardd.effects import sshd as service
from sshguardd.effects.shadow_file import ShadowFile
from sshguardd.effects.sshd_unit import SshdUnit

# Debian 12's /lib/systemd/system/ssh.service, as shipped (the EnvironmentFile moved).
FRAGMENT = """\
[Unit]
Description=OpenBSD Secure Shell server
After=network.target auditd.service

[Service]
EnvironmentFile=-{default}
ExecStartPre=/usr/sbin/sshd -t
ExecStart=/usr/sbin/sshd -D $SSHD_OPTS
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
Type=notify
RuntimeDirectory=sshd

[Install]
WantedBy=multi-user.target
Alias=sshd.service
"""
EIC = "/usr/share/ec2-instance-connect/eic_run_authorized_keys"
# Ubuntu's ec2-instance-connect drop-in, with an admin's PermitRootLogin added.
OVERRIDE = f"""\
[Service]
ExecStart=
ExecStart=/usr/sbin/sshd -D -o PermitRootLogin=yes \\
    -o "AuthorizedKeysCommand {EIC} %%u %%f" \\
    -o "AuthorizedKeysCommandUser ec2-instance-connect" $SSHD_OPTS
"""


class Units:
    """An etc and a lib unit directory, searched in that order."""

    def __init__(self, root: Path):
        self.etc = root / "etc-systemd"
        self.lib = root / "lib-systemd"
        for d in (self.etc, self.lib):
            d.mkdir(parents=True)
        self.default = root / "default-ssh"
        self.default.write_text("# Options to pass to sshd\nSSHD_OPTS=\n")
        (self.lib / "ssh.service").write_text(FRAGMENT.format(default=self.default))
        self.override = self.etc / "ssh.service.d" / "override.conf"

    def dropin(self, text: str, name: str = "override.conf", where: Path | None = None) -> Path:
        p = (where or self.etc) / "ssh.service.d" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def unit(self) -> SshdUnit:
        return SshdUnit(search_path=[str(self.etc), str(self.lib)], booted=False)


@pytest.fixture
def units(tmp_path: Path) -> Units:
    return Units(tmp_path / "units")


def test_ubuntu_instance_connect_override_is_read_with_its_origin(units: Units) -> None:
    units.dropin(OVERRIDE)
    units.default.write_text('SSHD_OPTS="-o PasswordAuthentication=yes -p 2222"\n')
    cmd = units.unit().load()
    assert cmd.problems == ()
    at = Location(str(units.override), 3)
    got = {s.keyword: (s.value, s.location) for s in cmd.settings}
    assert got == {
        "permitrootlogin": ("yes", at),
        "authorizedkeyscommand": (f"{EIC} %u %f", at),   # %% is systemd's %
        "authorizedkeyscommanduser": ("ec2-instance-connect", at),
        "passwordauthentication": ("yes", Location(str(units.default), 1)),
        "port": ("2222", Location(str(units.default), 1)),
    }
    assert cmd.args == ("-o", "PermitRootLogin=yes", "-o", f"AuthorizedKeysCommand {EIC} %u %f",
                        "-o", "AuthorizedKeysCommandUser ec2-instance-connect",
                        "-o", "PasswordAuthentication=yes", "-p", "2222")
    assert cmd.files == (str(units.lib / "ssh.service"), str(units.override),
                         str(units.default))
    assert cmd.describe(at) == f"set on sshd's command line in {at} (-o of ssh.service)"


def test_dropin_order_masking_and_aliases(units: Units) -> None:
    # The same name in /etc hides the one in /lib; a /dev/null drop-in is masked; drop-ins
    # apply in file-name order across directories; the Alias= name's drop-ins count.
    units.dropin("[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -o MaxAuthTries=2\n",
                 "10-a.conf", units.lib)
    units.dropin("[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -o MaxAuthTries=9\n",
                 "10-a.conf")
    (units.etc / "ssh.service.d" / "20-off.conf").symlink_to("/dev/null")
    (units.lib / "ssh.service.d" / "20-off.conf").write_text(
        "[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -o MaxAuthTries=1\n")
    alias = units.etc / "sshd.service.d"
    alias.mkdir()
    (alias / "30-b.conf").write_text(
        "[Service]\n# reset, then our own\nExecStart=\nExecStart=-/usr/sbin/sshd -D -oLogLevel=VERBOSE\n")
    (units.etc / "sshd.service").symlink_to(units.lib / "ssh.service")
    cmd = SshdUnit(units=("sshd.service",), search_path=[str(units.etc), str(units.lib)],
                   booted=False).load()
    assert cmd.unit == "ssh.service"
    assert [(s.keyword, s.value) for s in cmd.settings] == [("loglevel", "VERBOSE")]
    (units.etc / "ssh.service").symlink_to("/dev/null")
    assert units.unit().load().problems == ("ssh.service is masked",)


def test_what_is_not_expanded_for_sure_is_a_problem_not_a_guess() -> None:
    cmd = sshd_cmdline.command_line("ssh.service", [(
        "/u", "[Service]\nExecStart=/usr/sbin/sshd -D -o Banner=%h/b -o 'Port 22\n")],
        lambda p: None)
    assert any("unterminated quote" in p for p in cmd.problems), cmd
    unit = ("[Service]\nEnvironmentFile=/etc/none\n"
            "ExecStart=/usr/sbin/sshd -D -o Banner=%h/b -t\n")
    cmd = sshd_cmdline.command_line("ssh.service", [("/u", unit)], lambda p: None)
    assert any("%h" in p for p in cmd.problems)
    assert any("EnvironmentFile /etc/none is missing" in p for p in cmd.problems)
    assert any("-t on sshd's command line" in p for p in cmd.problems)


def guard_with(box: Box, units: Units) -> None:
    box.guard.cmdlines = CommandLines(units.unit())


def test_a_setting_on_the_command_line_is_judged_and_reported_where_it_lives(
        tmp_path: Path, units: Units) -> None:
    box = Box(tmp_path / "box")
    box.give_alice_a_key()
    units.dropin(OVERRIDE)
    guard_with(box, units)
    before = box.main.read_text()
    # Before: sshd -T without the unit's options, as every call was made, says "no".
    assert service.Sshd().effective(box.main)["permitrootlogin"] == "no"
    out = box.guard.check_all("start")
    assert actions(out) == {"permitrootlogin": "drift"}
    (o,) = [o for o in out if o.item == "permitrootlogin"]
    assert o.file == str(units.override) and o.old == "yes"
    assert f"set on sshd's command line in {units.override}:3" in o.detail
    assert box.main.read_text() == before and box.restart_count() == 0
    (alert,) = box.alerts("drift")
    assert alert["SETTING"] == "permitrootlogin" and alert["FILE"] == str(units.override)
    (refused,) = box.alerts("repair_refused")
    assert "sshguardd does not edit unit files" in refused["REASON"]
    assert box.metric("repairs_refused_total", reason="command_line") == 1
    # The same runner (sshd -T with the options) is what the guard asked.
    assert box.effective()["permitrootlogin"] == "yes"
    assert units.override.read_text() == OVERRIDE  # never written
    # Gone from the command line: judged compliant again, nothing to do.
    units.dropin(OVERRIDE.replace("-o PermitRootLogin=yes ", ""))
    assert actions(box.guard.check_all("again")) == {}


def test_instance_connect_on_the_command_line_is_a_way_in(tmp_path: Path,
                                                          units: Units) -> None:
    # Nobody has a key; passwords on in sshd_config. Without the unit's options the guard
    # saw no way in and refused to turn passwords off (the old behaviour, kept below).
    box = Box(tmp_path / "box")
    box.main.write_text(box.main.read_text().replace("PasswordAuthentication no",
                                                     "PasswordAuthentication yes"))
    assert actions(box.guard.check_all("no unit")) == {"passwordauthentication": "refused"}
    units.dropin(OVERRIDE.replace("-o PermitRootLogin=yes ", ""))
    guard_with(box, units)
    box.guard.report.standing.clear()
    assert actions(box.guard.check_all("unit")) == {"passwordauthentication": "repaired"}
    assert box.effective()["passwordauthentication"] == "no"
    rows = check.audit(box.cfg, box.runner, ShadowFile(box.shadow, passwd=box.passwd),
                       unit=units.unit())
    (ways,) = [r for r in rows if r.item == "ways in"]
    assert f"alice: EC2 Instance Connect (AuthorizedKeysCommand {EIC} %u %f)" in ways.value


def test_check_names_the_command_line_as_the_source(tmp_path: Path, units: Units) -> None:
    box = Box(tmp_path / "box")
    units.dropin(OVERRIDE)
    rows = check.audit(box.cfg, service.Sshd(), ShadowFile(box.shadow, passwd=box.passwd),
                       unit=units.unit())
    (row,) = [r for r in rows if r.item == "permitrootlogin"]
    assert (row.value, row.source, row.ok) == ("yes", f"{units.override}:3", False)
    assert "set on sshd's command line" in row.note and "fix it there" in row.note


def test_the_units_f_is_the_file_judged(tmp_path: Path, units: Units) -> None:
    box = Box(tmp_path / "box")
    box.give_alice_a_key()
    alt = box.ssh / "sshd_config.alt"
    alt.write_text(box.main.read_text().replace("PermitRootLogin no", "PermitRootLogin yes"))
    os.chmod(alt, 0o644)
    units.dropin(f"[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -f {alt}\n")
    guard_with(box, units)
    before = box.main.read_text()
    assert actions(box.guard.check_all("start")) == {"permitrootlogin": "repaired"}
    assert "PermitRootLogin no" in alt.read_text()
    assert box.main.read_text() == before


def test_check_diff_plans_no_edit_for_a_command_line_setting(tmp_path: Path,
                                                             units: Units) -> None:
    # Before, the plan put "PermitRootLogin no" into sshd_config (sshd -T without the
    # options said prohibit-password), where the command line would have beaten it.
    box = Box(tmp_path / "box")
    box.give_alice_a_key()
    box.main.write_text(box.main.read_text().replace("PermitRootLogin no\n", ""))
    old = check.plan(box.cfg, service.Sshd(), ShadowFile(box.shadow, passwd=box.passwd),
                     passwd=box.passwd, unit=SshdUnit(search_path=[], booted=False))
    assert [str(e["new"]).endswith("PermitRootLogin no\n") for e in old.edits] == [True]
    units.dropin(OVERRIDE)
    p = check.plan(box.cfg, service.Sshd(), ShadowFile(box.shadow, passwd=box.passwd),
                   passwd=box.passwd, unit=units.unit())
    assert p.edits == [] and p.diff == ""
    assert any(f"set on sshd's command line in {units.override}:3" in n for n in p.notes)
