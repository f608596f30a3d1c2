"""`sshguardd demo --non-interactive` runs the real daemon in a sandbox and every one of its
checks passes; the host is untouched; Ctrl-C tears everything down."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sshguardd.demo.sandbox import wait_for

pytestmark = pytest.mark.e2e
HOST_FILES = ("/etc/ssh/sshd_config", "/etc/shadow", "/etc/passwd", "/etc/group")


def _digests() -> dict[str, str]:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in HOST_FILES}


def _demo(workdir: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "sshguardd", "demo", "--non-interactive",
                             "--workdir", str(workdir), *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def test_demo_shows_repairs_bans_and_metrics(tmp_path: Path) -> None:
    before = _digests()
    proc = _demo(tmp_path)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert "demo result: ok" in out
    # What a newcomer is promised to see, each as a passed check:
    for expected in (
        "`sshguardd run` is up",
        "permitrootlogin is no after the start-up check",
        "passwordauthentication is no after the start-up check",
        "root's password is locked after the drift",
        "both drifts were reported as repaired",
        "192.0.2.10 banned after",
        "198.51.100.23 banned after",
        "2001:db8:bad::7 banned after",
        "the admin (192.0.2.200) still logs in with its key",
        "sshguardd_bans_total counts",
        "nft table inet sshguardd exists",
        "the daemon stopped cleanly on SIGTERM",
        "the host's sshd_config, shadow and passwd are unchanged",
    ):
        assert f"✓ {expected}" in out, f"missing: {expected}\n{out}"
    assert "✗" not in out
    # The journal's alerts were shown live as the daemon raised them.
    assert "repaired " in out and "ban " in out
    assert _digests() == before
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_tears_the_sandbox_down(tmp_path: Path) -> None:
    before = _digests()
    proc = _demo(tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        # Interrupt once sshd is running inside, as an impatient newcomer would.
        wait_for(lambda: any("sshd listening on port 22" in ln for ln in lines)
                 or proc.poll() is not None, 120, what="the demo's sshd")
        assert proc.poll() is None, "".join(lines)
        sandboxes = list(tmp_path.iterdir())
        assert sandboxes, "the demo keeps its layers under --workdir"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        reader.join(10)
        proc.stdout.close()  # type: ignore[union-attr]  (a leaked pipe warns in a later test)
    assert "interrupted: tearing the sandbox down" in "".join(lines)
    assert list(tmp_path.iterdir()) == []
    # Nothing of the sandbox survives: no process still holds a mount of its layers.
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            assert str(tmp_path) not in Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            continue
    assert _digests() == before


def test_demo_refuses_clearly_without_root() -> None:
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-m", "sshguardd", "demo", "--non-interactive"],
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 69, result.stderr
    assert "needs root" in result.stderr and "changes nothing outside" in result.stderr
