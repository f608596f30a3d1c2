"""EC2's access paths and writers (issue 15 part 2), on real files with the real `sshd -T`:
EC2 Instance Connect and Session Manager count as ways in; cloud-init's disable_root key
does not; ssm-user's (and any non-root account's) password changes are no drift;
cloud-init's 50-cloud-init.conf is repaired where sshd reads it; the never-ban list of
[ec2]; the unit's ordering after cloud-init.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drift_helpers import HASH, Box, actions
from sshguardd import config, contracts
from sshguardd.bans.policy import BanPolicy
from sshguardd.commands import check
from sshguardd.daemon.lockout_guard import ec2_ways
from sshguardd.drift import lockout, sshd_cmdline
from sshguardd.effects.ec2_access import SessionManager
from sshguardd.effects.shadow_file import ShadowFile

ROOT = Path(__file__).resolve().parents[1]
AL2_EIC = "/opt/aws/bin/eic_run_authorized_keys"
# cloud-init's cc_ssh with disable_root: true (its default disable_root_opts), as it
# writes root's authorized_keys on Ubuntu.
DISABLE_ROOT = ('no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo '
                "'Please login as the user \\\"ubuntu\\\" rather than the user \\\"root\\\".';"
                'echo;sleep 10;exit 142" ')


def passwords_on(box: Box) -> None:
    box.main.write_text(box.main.read_text().replace("PasswordAuthentication no",
                                                     "PasswordAuthentication yes"))


def test_instance_connect_in_sshd_config_is_a_way_in_and_named(tmp_path: Path) -> None:
    # Amazon Linux 2 puts it in sshd_config itself; nobody has a key file.
    box = Box(tmp_path)
    passwords_on(box)
    box.main.write_text(box.main.read_text() + f"AuthorizedKeysCommand {AL2_EIC} %u %f\n"
                        "AuthorizedKeysCommandUser ec2-instance-connect\n")
    assert actions(box.guard.check_all("start")) == {"passwordauthentication": "repaired"}
    rows = check.audit(box.cfg, box.runner, ShadowFile(box.shadow, passwd=box.passwd))
    (ways,) = [r for r in rows if r.item == "ways in"]
    assert f"alice: EC2 Instance Connect (AuthorizedKeysCommand {AL2_EIC} %u %f)" in ways.value
    # The repair left both lines as they were: sshguardd never writes them.
    text = box.main.read_text()
    assert f"AuthorizedKeysCommand {AL2_EIC} %u %f\n" in text
    assert "AuthorizedKeysCommandUser ec2-instance-connect\n" in text


def test_sshguardd_never_enforces_authorized_keys_command() -> None:
    for key in ("AuthorizedKeysCommand", "authorizedkeyscommanduser"):
        with pytest.raises(config.ConfigError) as exc:
            config.parse(f'[drift.sshd_settings]\n{key} = "none"\n')
        assert exc.value.problems[0][0] == f"drift.sshd_settings.{key}"


def test_cloud_init_disable_root_key_is_no_way_in(tmp_path: Path) -> None:
    # Root keys allowed by the policy, passwords on: root's only key carries cloud-init's
    # forced command, so turning passwords off would leave nobody a way in.
    box = Box(tmp_path, sshd_settings={"PermitRootLogin": "prohibit-password"})
    box.main.write_text(box.main.read_text().replace(
        "PermitRootLogin no", "PermitRootLogin prohibit-password"))
    passwords_on(box)
    box.shadow.write_text(box.shadow.read_text().replace("root:*:", f"root:{HASH}:"))
    root_ssh = box.root / "root" / ".ssh"
    root_ssh.mkdir(parents=True)
    pub = Path(f"{box.key}.pub").read_text()
    (root_ssh / "authorized_keys").write_text(DISABLE_ROOT + pub)
    (k,) = lockout.keys.parse_keys(DISABLE_ROOT + pub)
    assert k.command is not None and "exit 142" in k.command  # read as sshd reads it
    out = box.guard.check_all("start")
    assert actions(out)["passwordauthentication"] == "refused"
    (alert,) = box.alerts("lockout_guard")
    assert "command= (cloud-init disable_root)" in alert["REASON"]
    # The same key without the prefix is a way in.
    (root_ssh / "authorized_keys").write_text(pub)
    assert actions(box.guard.check_all("plain key"))["passwordauthentication"] == "repaired"


def make_agent(root: Path, registered: str | None) -> SessionManager:
    binary = root / "usr-bin" / "amazon-ssm-agent"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    state = root / "var-lib-amazon-ssm"
    state.mkdir()
    if registered == "registration":
        (state / "registration").write_text('{"ManagedInstanceID":"mi-0123456789abcdef0"}')
    elif registered:
        (state / registered / "document").mkdir(parents=True)
    return SessionManager(binaries=[str(root / "nowhere"), str(binary)], state_dir=str(state))


@pytest.mark.parametrize("registered", ["i-0123456789abcdef0", "registration"])
def test_a_registered_session_manager_agent_is_a_way_in(tmp_path: Path,
                                                         registered: str) -> None:
    box = Box(tmp_path / "box")
    passwords_on(box)
    assert make_agent(tmp_path / "unregistered", None).evidence() is None
    box.guard.lockout.host_ways = lambda: ()
    assert actions(box.guard.check_all("no agent")) == {"passwordauthentication": "refused"}
    agent = make_agent(tmp_path / "agent", registered)
    evidence = agent.evidence()
    assert evidence is not None and "Session Manager (amazon-ssm-agent at" in evidence
    box.guard.lockout.host_ways = lambda: (evidence,)
    assert actions(box.guard.check_all("agent")) == {"passwordauthentication": "repaired"}
    # `check` says so.
    row = check.ways_in(box.cfg, box.runner, str(box.main),
                        ShadowFile(box.shadow, passwd=box.passwd))
    assert row.value == "none visible"  # ec2_ways(cfg) looks at the host's real paths
    assert ec2_ways(config.parse("[ec2]\nsession_manager = false\n"))() == ()


def test_ssm_user_password_churn_and_other_accounts_are_never_drift(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.give_alice_a_key()
    box.passwd.write_text(box.passwd.read_text()
                          + "ssm-user:x:1001:1001::/home/ssm-user:/bin/sh\n")
    box.shadow.write_text(box.shadow.read_text() + "ssm-user:!:19800:0:99999:7:::\n")
    assert actions(box.guard.check_all("start")) == {}
    other = HASH.replace("abcdefghijklmnopqrstu", "zyxwvutsrqponmlkjihgf")
    # The agent sets a fresh password per session; an admin changes alice's.
    for field in (HASH, other, "!" + other, "*"):
        text = box.shadow.read_text()
        line = next(ln for ln in text.splitlines() if ln.startswith("ssm-user:"))
        new = text.replace(line, f"ssm-user:{field}:19801:0:99999:7:::")
        new = new.replace(f"alice:{HASH}:", f"alice:{other}:") if field == other else new
        box.shadow.write_text(new)
        out = box.guard.handle(contracts.FileChanged(str(box.shadow), box.now))
        assert actions(out) == {}, field
        assert box.shadow.read_text() == new
    assert box.alerts("drift") == [] and box.alerts("repaired") == []
    assert box.restart_count() == 0


def test_cloud_init_pwauth_dropin_is_repaired_where_sshd_reads_it_first(
        tmp_path: Path) -> None:
    # ssh_pwauth: true writes this; sshd_config Includes sshd_config.d/*.conf before its
    # own PasswordAuthentication line, so the drop-in's value is the one in force.
    box = Box(tmp_path)
    box.give_alice_a_key()
    dropin = box.ssh / "sshd_config.d" / "50-cloud-init.conf"
    dropin.write_text("PasswordAuthentication yes\n")
    before = box.main.read_text()
    assert box.effective()["passwordauthentication"] == "yes"
    out = box.guard.check_all("start")
    assert actions(out) == {"passwordauthentication": "repaired"}
    assert [o.file for o in out if o.action == "repaired"] == [str(dropin)]
    assert "PasswordAuthentication no" in dropin.read_text()
    assert box.main.read_text() == before
    assert box.effective()["passwordauthentication"] == "no"


def test_ec2_never_ban_list_joins_the_allow_list() -> None:
    cfg = config.parse('[ec2]\ninstance_connect_prefixes = ["18.206.107.24/29"]\n'
                       'vpc_cidrs = ["10.20.0.0/16", "2600:1f18:aaaa:bb00::/56"]\n')
    assert cfg.ban.allow == ("127.0.0.0/8", "::1/128", "18.206.107.24/29", "10.20.0.0/16",
                             "2600:1f18:aaaa:bb00::/56")
    policy = BanPolicy(cfg.ban)
    for addr in ("18.206.107.29", "10.20.3.4", "2600:1f18:aaaa:bb12::1"):
        assert policy.network_of(addr) is None, addr
    assert policy.network_of("18.206.107.32") == "18.206.107.32/32"
    assert config.parse("").ban.allow == ("127.0.0.0/8", "::1/128")  # opt-in
    for bad, why in (('"0.0.0.0/0"', "broader than any VPC"), ('"10.0.0.0/7"', "/8"),
                     ('"nope"', "not an IP address")):
        with pytest.raises(config.ConfigError) as exc:
            config.parse(f"[ec2]\nvpc_cidrs = [{bad}]\n")
        (key, reason), = exc.value.problems
        assert key == "ec2.vpc_cidrs.0" and why in reason


def test_the_unit_starts_after_cloud_init_without_pulling_it_in() -> None:
    path = ROOT / "packaging" / "systemd" / "sshguardd.service"
    unit = sshd_cmdline.assignments(str(path), path.read_text(), "Unit")
    after = " ".join(v for k, v, _ in unit if k == "After").split()
    assert "cloud-config.service" in after
    pulls = " ".join(v for k, v, _ in unit if k in ("Wants", "Requires", "Requisite"))
    assert "cloud" not in pulls
    assert os.path.basename(path) == "sshguardd.service"
