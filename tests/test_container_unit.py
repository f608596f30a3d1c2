"""sshd's command line under a real systemd (issue 15 part 1): an ExecStart override for
ssh.service in the style of Ubuntu's EC2 Instance Connect, plus an admin's
`-o PermitRootLogin=yes`, is what `systemctl show` reports and sshd runs with; `sshguardd
check` and the running daemon (inside its hardened unit) judge it, name the drop-in and its
line, and leave both the drop-in and sshd_config alone.

Boots its own container with tests/test_container.py's helpers (TESTBED.md's recipe).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sshguardd.demo.sandbox import wait_for
from test_container import NAME, ROOT, Container, ensure_rootfs, install, journal, stage_package

pytestmark = [pytest.mark.container, pytest.mark.e2e]

OVERRIDE_PATH = "/etc/systemd/system/ssh.service.d/override.conf"
EIC = "/usr/share/ec2-instance-connect/eic_run_authorized_keys"
OVERRIDE = f"""\
[Service]
ExecStart=
ExecStart=/usr/sbin/sshd -D -o PermitRootLogin=yes \\
    -o "AuthorizedKeysCommand {EIC} %%u %%f" \\
    -o "AuthorizedKeysCommandUser ec2-instance-connect" $SSHD_OPTS
"""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    if os.geteuid() != 0:
        pytest.fail("the container test needs root (run the suite with scripts/test.sh)")
    work = tmp_path_factory.mktemp("container-unit")
    stage = stage_package(work / "stage")
    c = Container(ensure_rootfs(), f"{NAME}-unit", work,
                  binds_ro=[(stage, "/stage"), (ROOT, "/src")])
    try:
        c.start()
        install(c)
        c.sh("useradd -r -s /usr/sbin/nologin ec2-instance-connect")
        c.write(OVERRIDE_PATH, OVERRIDE)
        c.sh("systemctl daemon-reload && systemctl restart ssh.service", check=True)
        yield c
    finally:
        c.stop()


def test_check_and_the_daemon_name_the_override(box: Container) -> None:
    c = box
    # systemd runs sshd with the override's options (the admin's and Instance Connect's).
    shown = c.show("ssh.service", "ExecStart", "DropInPaths")
    assert OVERRIDE_PATH in shown["DropInPaths"]
    assert "PermitRootLogin=yes" in shown["ExecStart"]
    # systemd's own reading agrees with ours on the specifiers: %%u is sshd's %u.
    assert f"{EIC} %u %f" in shown["ExecStart"] and "%%" not in shown["ExecStart"], shown
    r = c.run(["sshguardd", "check"])
    assert r.returncode == 1, r.stdout + r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("permitrootlogin "))
    assert row.split()[1:3] == ["yes", f"{OVERRIDE_PATH}:3"], r.stdout
    assert (f"note: permitrootlogin: set on sshd's command line in {OVERRIDE_PATH}:3"
            in r.stdout), r.stdout
    ways = next(line for line in r.stdout.splitlines() if line.startswith("ways in "))
    assert f"EC2 Instance Connect (AuthorizedKeysCommand {EIC} %u %f)" in ways, r.stdout
    # The daemon, in its sandbox, asks systemd the same and reports instead of repairing
    # (it still repairs the stock config's PasswordAuthentication, which lives there).
    c.run(["systemctl", "start", "sshguardd"], check=True)

    def refused() -> list[dict[str, str]]:
        return [e for e in journal(c, "SSHGUARDD_ALERT=repair_refused")
                if e.get("SETTING") == "permitrootlogin"]

    (alert, *_) = wait_for(refused, timeout=60, interval=0.5,
                           what="the command-line setting reported")
    assert alert["FILE"] == OVERRIDE_PATH and "does not edit unit files" in alert["REASON"]
    assert c.run(["cat", OVERRIDE_PATH], check=True).stdout == OVERRIDE
    # Before, sshd -T without the options said prohibit-password, and a "PermitRootLogin
    # no" went into sshd_config, verified, and reported repaired while sshd ran with yes.
    live = [ln.split() for ln in c.run(["cat", "/etc/ssh/sshd_config"], check=True)
            .stdout.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert not [w for w in live if w[0].lower() == "permitrootlogin"], live
    eff = c.run(["sshd", "-T", "-o", "PermitRootLogin=yes", "-C",
                 "user=root,host=x,addr=192.0.2.9"], check=True).stdout
    assert "permitrootlogin yes" in eff
    c.run(["systemctl", "stop", "sshguardd"], check=True)
