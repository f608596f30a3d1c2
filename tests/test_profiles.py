"""Profiles (issue 15 part 3): the shipped CIS, STIG and baseline profiles, the loader that
rejects a broken one with its key path (exit 78), `check --profile`, and each profile
enforced by the real daemon on Debian's stock sshd_config in a Sandbox, verified with the
real `sshd -T` and a real OpenSSH key login.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from daemon_helpers import DaemonProc, write_config
from sshguardd import cli, config
from sshguardd.demo.sandbox import Sandbox, wait_for
from sshguardd.drift import profiles
from sshguardd.drift.sshd_model import normalise_value
from sshguardd.effects import profile_files

STOCK = Path("/usr/share/openssh/sshd_config")  # Debian's stock file, as the package ships it
RESTART = '#!/bin/sh\nset -e\necho restart >> /run/restarts.log\nkill -HUP "$(cat /run/sshd.pid)"\n'


# ---------------------------------------------------------------------- the data files

def test_shipped_profiles_load_and_baseline_is_todays_policy():
    sizes = {n: profile_files.load(n).size for n in profiles.NAMES}
    print("controls per profile:", sizes)
    assert sizes == {"baseline": 4, "cis": 26, "stig": 19}
    base = profile_files.load("baseline")
    targets, rules = profiles.policy(base, config.SshdPolicy())
    # Exactly what [drift.sshd_settings] enforced before profiles existed.
    assert targets == dict(config.SshdPolicy().model_dump())
    assert rules == {}
    # Every profile keeps the baseline's four settings enforced.
    for name in ("cis", "stig"):
        t, _ = profiles.policy(profile_files.load(name), config.SshdPolicy())
        assert {k: t[k] for k in targets} == targets, name


def test_explicit_sshd_settings_win_over_the_profile():
    dc = config.parse('[drift]\nprofile = "cis"\n[drift.sshd_settings]\n'
                      'maxauthtries = 3\n').drift
    targets, rules = profiles.policy(profile_files.load("cis"), dc.sshd_settings)
    assert targets["maxauthtries"] == "3" and "maxauthtries" not in rules
    assert targets["maxstartups"] == "10:30:60" and "maxstartups" in rules


@pytest.mark.parametrize(("keyword", "require", "good", "bad"), [
    ("maxauthtries", {"min": 1, "max": 4}, ["4", "1"], ["5", "0", "x", None]),
    ("maxstartups", {"maxstartups": {"start": 10, "rate": 30, "full": 60}},
     ["10:30:60", "5:20:40"], ["10:30:100", "11:30:60", "10:31:60", "10"]),
    ("rekeylimit", {"rekeylimit": {"bytes": 1 << 30, "seconds": 3600}},
     ["1073741824 3600", "1G 1h", "512M 30m"], ["0 0", "1073741824 0", "2G 1h", "1G 2h"]),
    ("loglevel", {"one_of": ["VERBOSE", "INFO"]}, ["INFO", "verbose"], ["DEBUG3"]),
    ("ciphers", {"subset_of": ["aes256-ctr", "aes128-ctr"]}, ["aes128-ctr"],
     ["aes128-ctr,chacha20-poly1305@openssh.com"]),
    ("macs", {"excludes": ["umac-64@openssh.com"]}, ["hmac-sha2-256"],
     ["hmac-sha2-256,umac-64@openssh.com"]),
    ("permitrootlogin", {"equals": "prohibit-password"}, ["without-password"], ["yes"]),
])
def test_requirements_judge_values_as_sshd_prints_them(keyword, require, good, bad):
    r = profiles.Requirement.model_validate(require)
    assert all(r.holds(keyword, v) for v in good), r.describe()
    assert not any(r.holds(keyword, v) for v in bad), r.describe()


GOOD = ('name = "x"\ntitle = "t"\n[[control]]\nid = "a"\nrefs = ["r"]\ntitle = "t"\n'
        'keyword = "MaxAuthTries"\nrequire = { max = 4 }\nset = "4"\naction = "enforce"\n')


@pytest.mark.parametrize(("text", "key", "reason"), [
    (GOOD.replace("max = 4", 'max = "four"'), "control[0].require.max", "integer"),
    (GOOD.replace('"enforce"', '"sometimes"'), "control[0].action", "enforce"),
    (GOOD + "bogus = 1\n", "control[0].bogus", "unknown key"),
    (GOOD.replace('set = "4"\n', ""), "control[0]", "needs `set`"),
    (GOOD.replace('set = "4"', 'set = "6"'), "control[0]", "does not satisfy"),
    (GOOD.replace("MaxAuthTries", "AllowUsers").replace("max = 4", 'equals = "x"')
     .replace('"4"', '"x"'), "control[0]", "accumulate"),
    (GOOD.replace('refs = ["r"]', "refs = []"), "control[0].refs", "at least 1"),
    (GOOD + '[[file]]\nid = "f"\nrefs = ["r"]\ntitle = "t"\nfiles = "sshd_config"\n'
     'modes = { root = "644" }\naction = "report"\n', "file[0]", "octal"),
    (GOOD + GOOD[GOOD.index("[[control]]"):], "(top)", "appears twice"),
    ("name = \n", "(syntax)", ""),
])
def test_loader_rejects_malformed_profiles_with_key_paths(text, key, reason):
    with pytest.raises(config.ConfigError) as err:
        profiles.parse(text, "site.toml")
    keys = dict(err.value.problems)
    assert key in keys, err.value.problems
    assert reason in keys[key], err.value.problems


def test_a_broken_site_profile_is_exit_78_naming_its_key(tmp_path: Path, capsys):
    prof = tmp_path / "site.toml"
    prof.write_text(GOOD.replace("max = 4", 'max = "four"'))
    os.chmod(prof, 0o644)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[drift]\nprofile = "{prof}"\n')
    assert cli.main(["check-config", "--config", str(cfg)]) == cli.EX_CONFIG
    out = "".join(capsys.readouterr())
    assert "control[0].require.max" in out, out
    # A profile_enforce entry naming a control that cannot be enforced is one too.
    cfg.write_text('[drift]\nprofile = "cis"\nprofile_enforce = ["cis-5.1.4"]\n')
    assert cli.main(["check-config", "--config", str(cfg)]) == cli.EX_CONFIG
    assert "drift.profile_enforce[0]" in "".join(capsys.readouterr())
    # A site profile anyone but root could rewrite decides nothing.
    prof.write_text(GOOD)
    os.chmod(prof, 0o666)
    cfg.write_text(f'[drift]\nprofile = "{prof}"\n')
    assert cli.main(["check-config", "--config", str(cfg)]) == cli.EX_CONFIG
    assert "root-owned and not writable" in "".join(capsys.readouterr())


# ---------------------------------------------------------------------- in a sandbox

@pytest.fixture
def sandbox(tmp_path: Path):
    with Sandbox(tmp_path, overlays=("/var", "/root", "/home")) as sb:
        # Debian's stock file, whatever the host's own has become; no drop-ins.
        shutil.copyfile(STOCK, sb.path("/etc/ssh/sshd_config"))
        os.chmod(sb.path("/etc/ssh/sshd_config"), 0o644)
        clean = ("rm -f /etc/ssh/sshd_config.d/*; "
                 "find /root /home -name 'authorized_keys*' -delete")
        sb.run(["sh", "-c", clean], check=True)
        sb.run(["mkdir", "-p", "/etc/sshguardd", "/run/keys"], check=True)
        restart = sb.path("/etc/sshguardd/restart-sshd")
        restart.write_text(RESTART)
        restart.chmod(0o755)
        yield sb


def _check(sb: Sandbox, profile: str) -> tuple[int, dict]:
    r = sb.run(["env", f"PYTHONPATH={Path(__file__).resolve().parent.parent}",
                sys.executable, "-c",
                "import sys; from sshguardd import cli; sys.exit(cli.main(sys.argv[1:]))",
                "check", "--profile", profile, "--json"], timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def _score(doc: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"pass": [], "fail": []}
    for i in doc["items"]:
        out["pass" if i["ok"] else "fail"].append(i["id"])
    return out


def test_check_profile_cis_json_on_the_stock_config(sandbox: Sandbox):
    scores, docs = {}, {}
    for name in profiles.NAMES:
        rc, docs[name] = _check(sandbox, name)
        d = docs[name]
        scores[name] = (rc, d["controls"], d["passed"], d["failed"], d["enforced_failed"])
    print("stock Debian (profile: rc, controls, rows passed, rows failed, enforced failed):",
          scores)
    assert scores == {"baseline": (1, 4, 2, 2, 2), "cis": (1, 26, 18, 11, 8),
                      "stig": (1, 19, 14, 9, 6)}
    doc = docs["cis"]
    failed = {i["id"]: i for i in doc["items"] if not i["ok"]}
    assert sorted(failed) == sorted([
        "cis-5.1.1", "cis-5.1.4", "cis-5.1.5", "cis-5.1.7-interval", "cis-5.1.8",
        "cis-5.1.13", "cis-5.1.15", "cis-5.1.16", "cis-5.1.18", "cis-5.1.20",
        "baseline-passwordauthentication"])
    assert {k for k, i in failed.items() if i["action"] == "report"} == {
        "cis-5.1.4", "cis-5.1.5", "cis-5.1.15"}
    assert failed["cis-5.1.16"]["value"] == "6" and failed["cis-5.1.16"]["source"] == "default"
    assert failed["cis-5.1.18"]["value"] == "10:30:100"
    assert failed["cis-5.1.1"]["value"] == "root:root 0644"
    assert failed["cis-5.1.1"]["source"] == "/etc/ssh/sshd_config"
    kbd = next(i for i in doc["items"] if i["id"] == "baseline-kbdinteractiveauthentication")
    assert kbd["ok"] and kbd["source"] == "/etc/ssh/sshd_config:62", kbd


def _key_login(sb: Sandbox, user: str, key: str) -> str | None:
    r = sb.run(["ssh", "-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "PreferredAuthentications=publickey", "-o", "LogLevel=ERROR",
                f"{user}@127.0.0.1", "id -un"], timeout=30)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.mark.e2e
@pytest.mark.parametrize("name", profiles.NAMES)
def test_enforcing_each_profile_on_the_stock_config_keeps_the_admin_in(
        sandbox: Sandbox, tmp_path: Path, name: str):
    sb = sandbox
    admin = ("useradd -m -s /bin/bash admin && "
             "ssh-keygen -q -t ed25519 -N '' -f /run/keys/admin && "
             "install -d -o admin -g admin -m 700 /home/admin/.ssh && "
             "install -o admin -g admin -m 600 /run/keys/admin.pub "
             "/home/admin/.ssh/authorized_keys")
    sb.run(["sh", "-c", admin], check=True)
    write_config(sb, f'[drift]\nprofile = "{name}"\nrestart_command = '
                 '["/etc/sshguardd/restart-sshd"]\n[metrics]\nenabled = false\n'
                 "[updates]\nenabled = false\n")
    sb.start_sshd()
    assert _key_login(sb, "admin", "/run/keys/admin") == "admin"
    prof = profile_files.load(name)
    daemon = DaemonProc(sb, tmp_path / "daemon.log").start()
    try:
        def sshd_T() -> dict[str, str]:
            out = sb.run(["/usr/sbin/sshd", "-T"], check=True).stdout
            got: dict[str, str] = {}
            for line in out.splitlines():
                k, _, v = line.partition(" ")
                got[k] = f"{got[k]}\n{v}" if k in got else v
            return got

        def holds() -> list[str]:
            real = sshd_T()
            return [c.id for c in prof.enforced() if not c.holds(real.get(c.kw), real)]

        wait_for(lambda: not holds(), 30, what=f"every enforced {name} control to hold")
        real = sshd_T()
        for c in prof.enforced():
            assert c.holds(real.get(c.kw), real), (c.id, real.get(c.kw))
        assert normalise_value("permitrootlogin", real["permitrootlogin"]) == "no"
        # The files the profile enforces, too (check --profile judges them for real).
        wait_for(lambda: _check(sb, name)[1]["enforced_failed"] == 0, 30,
                 what=f"check --profile {name} to find no enforced failure")
        wait_for(lambda: sb.listening(22), 10, what="sshd listening after its restart")
        assert _key_login(sb, "admin", "/run/keys/admin") == "admin"
    finally:
        daemon.stop()


# ---------------------------------------------------------------------- repairs

def test_a_value_inside_a_bound_stays_and_one_outside_gets_the_profiles_value(tmp_path: Path):
    from drift_helpers import Box

    box = Box(tmp_path, profile="cis")
    box.give_alice_a_key()
    box.main.write_text(box.main.read_text() + "MaxAuthTries 3\nMaxStartups 10:30:100\n")
    box.guard.check_all()
    real = box.effective()
    assert real["maxauthtries"] == "3"          # within "<= 4": not drift, not touched
    assert real["maxstartups"] == "10:30:60"    # outside: the profile's `set`
    assert real["logingracetime"] == "60" and real["disableforwarding"] == "yes"
    assert "MaxAuthTries 3\n" in box.main.read_text()


def test_several_argument_values_are_written_as_separate_words(tmp_path: Path):
    # Quoted as one token, `RekeyLimit "1G 1h"` is 1 GiB and no time limit: sshd -T said
    # "rekeylimit 1073741824 0" and the verify step rolled the repair back.
    from drift_helpers import Box

    box = Box(tmp_path, profile="stig")
    box.give_alice_a_key()
    box.guard.check_all()
    assert "RekeyLimit 1G 1h\n" in box.main.read_text()
    assert box.effective()["rekeylimit"] == "1073741824 3600"


def test_file_modes_are_tightened_only_through_a_safe_descriptor(tmp_path: Path):
    control = profile_files.load("cis").file[0]  # sshd_config: root:root 0600
    plain = tmp_path / "sshd_config"
    plain.write_text("x\n")
    os.chmod(plain, 0o644)
    assert profile_files.tighten(control, str(plain)) == "mode 0644 -> 0600"
    assert plain.stat().st_mode & 0o7777 == 0o600
    # A symlink is never followed: the file behind it keeps its mode.
    target = tmp_path / "elsewhere"
    target.write_text("y\n")
    os.chmod(target, 0o644)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert control.problems(profile_files.inspect(str(link))) == [
        "a symlink, not a regular file"]
    with pytest.raises(OSError):
        profile_files.tighten(control, str(link))
    assert target.stat().st_mode & 0o7777 == 0o644
    # Someone else's file is reported, never made root's.
    theirs = tmp_path / "theirs"
    theirs.write_text("z\n")
    os.chown(theirs, 1000, 1000)
    os.chmod(theirs, 0o644)
    with pytest.raises(OSError, match="not root"):
        profile_files.tighten(control, str(theirs))
    assert theirs.stat().st_uid == 1000 and theirs.stat().st_mode & 0o7777 == 0o644
