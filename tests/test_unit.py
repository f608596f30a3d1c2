"""The systemd unit: `systemd-analyze verify` clean, exposure <= 3.0, and in step with the
config defaults and the CLI's exit codes. (Behaviour under a real systemd is
tests/test_container.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshguardd import cli, config
from sshguardd.demo.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "packaging" / "systemd" / "sshguardd.service"
MAX_EXPOSURE = 3.0


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    # systemd-analyze writes /run/systemd/systemd-units-load: give it a private /run.
    with Sandbox(tmp_path, etc_overlay=False, journald=False, dev=False) as sb:
        yield sb


def exposure(box: Sandbox, unit: Path) -> float:
    r = box.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)])
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


def unit_options(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_exposure_at_most_3(box: Sandbox) -> None:
    score = exposure(box, UNIT)
    assert score <= MAX_EXPOSURE, f"exposure {score}"


def test_exposure_check_would_catch_a_regression(box: Sandbox, tmp_path: Path) -> None:
    # The same unit without its [Service] hardening block must score far worse, so the
    # check above measures the hardening and not some constant.
    text = UNIT.read_text()
    stripped = text.split("# --- Hardening")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    weak = tmp_path / "sshguardd.service"
    weak.write_text(stripped)
    assert exposure(box, weak) > 8.0


def test_verify_is_clean(tmp_path: Path) -> None:
    # verify checks that ExecStart='s binary exists: give it /usr/bin/sshguardd in a
    # private overlay of /usr/bin (the host's /usr/bin stays untouched).
    script = shutil.which("sshguardd") or str(ROOT / ".venv" / "bin" / "sshguardd")
    assert Path(script).exists()
    with Sandbox(tmp_path, etc_overlay=True, overlays=("/usr/bin",), journald=False,
                 dev=False) as box:
        box.path("/usr/bin/sshguardd").symlink_to(script)
        unit = box.path("/etc/systemd/system/sshguardd.service")
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(UNIT.read_text())
        r = box.run(["systemd-analyze", "verify", "--man=no",
                     "/etc/systemd/system/sshguardd.service"])
        assert (r.returncode, r.stdout + r.stderr) == (0, "")
        # And it does complain about a broken unit, so silence above means something.
        unit.write_text(UNIT.read_text().replace("Type=notify", "Type=notifyy"))
        r = box.run(["systemd-analyze", "verify", "--man=no",
                     "/etc/systemd/system/sshguardd.service"])
        assert "notifyy" in r.stdout + r.stderr


def test_unit_matches_the_daemon() -> None:
    opts = unit_options(UNIT.read_text())
    svc = opts["Service"]
    assert svc["Type"] == ["notify"]
    assert float(svc["WatchdogSec"][0].rstrip("s")) > 0
    assert svc["ExecStartPre"] == ["-/usr/bin/sshguardd check-config"]
    assert svc["ExecStart"] == ["/usr/bin/sshguardd run"]
    # Synchronous: the verb waits for the daemon's outcome (tests/test_reload.py).
    assert svc["ExecReload"] == ["/usr/bin/sshguardd reload"]
    assert svc["RestartPreventExitStatus"] == [f"{cli.EX_CONFIG} {cli.EX_IOERR}"]
    assert svc["Restart"] == ["on-failure"]
    # The directories systemd creates are the ones the config defaults point at.
    d = config.Config()
    assert Path("/var/lib") / svc["StateDirectory"][0] == d.daemon.state_dir
    assert Path("/run") / svc["RuntimeDirectory"][0] == d.daemon.runtime_dir
    assert d.control.socket.parent == d.daemon.runtime_dir
    assert Path("/etc") / svc["ConfigurationDirectory"][0] == config.DEFAULT_PATH.parent
    # Drift repair renames temp files over /etc/shadow and into /etc/ssh.
    assert "/etc" in svc["ReadWritePaths"]
    assert svc["ProtectHome"] == ["read-only"]
    assert svc["NoNewPrivileges"] == ["yes"]
    caps = set(svc["CapabilityBoundingSet"][0].split())
    assert "CAP_NET_ADMIN" in caps and "CAP_SYS_ADMIN" not in caps
    # The metrics default address must be allowed by the IP filter.
    assert config.MetricsConfig().address.startswith("127.")
    assert "localhost" in svc["IPAddressAllow"]
    unit = opts["Unit"]
    assert "nftables.service" in unit["PartOf"]
    assert any("nftables.service" in v for v in unit["After"])


def test_check_config_verb_exists() -> None:
    # ExecStartPre= runs it; a missing verb would make every start fail.
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "sshguardd",
                        "check-config", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_resource_limits_are_set() -> None:
    # Issue 10: no LimitNOFILE, so 1,100 idle metrics connections took every descriptor.
    svc = unit_options(UNIT.read_text())["Service"]
    assert int(svc["LimitNOFILE"][0]) >= 1024 * 2
    assert int(svc["TasksMax"][0]) >= 32
    size = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    high, top = (int(v[0][:-1]) * size[v[0][-1]] for v in (svc["MemoryHigh"],
                                                            svc["MemoryMax"]))
    assert 256 << 20 <= high < top


def test_rate_limit_drop_in_for_sshd() -> None:
    # Issue 10: journald's default per-unit limit dropped sshd's lines after ~32k in 30 s.
    opts = unit_options((UNIT.parent / "50-sshguardd-ratelimit.conf").read_text())
    svc = opts["Service"]
    assert svc["LogRateLimitIntervalSec"] == ["30s"]
    assert int(svc["LogRateLimitBurst"][0]) >= 100_000
    assert set(opts) == {"Service"}
