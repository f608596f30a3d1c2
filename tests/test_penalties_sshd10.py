"""Debian 13's real sshd (OpenSSH 10.0p2, openssh-server 1:10.0p1) in a chroot, in
private namespaces: its PerSourcePenalties lines as the parser reads them, its `sshd -T`
as parse_settings reads it, and the premise of carrying penalties over a restart: after
SIGHUP (sshd re-executes, as on a restart) the new listener lets in a source whose
logged penalty had not run out (issue 15 part 4).

The Debian 13 root filesystem is made once with debootstrap into the test cache
($SSHGUARDD_TEST_CACHE, default /var/cache/sshguardd-test, as tests/test_container.py
does; about 1 min and 250 MB) and used through an overlay, so it stays unchanged.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sshguardd.contracts import Kind
from sshguardd.detect import classify
from sshguardd.detect.penalties import parse_line, parse_settings

pytestmark = pytest.mark.e2e

CACHE = Path(os.environ.get("SSHGUARDD_TEST_CACHE", "/var/cache/sshguardd-test"))
SUITE, PACKAGES = "trixie", ("openssh-server", "openssh-client")
MIRROR = "http://deb.debian.org/debian"
CAPTURE = Path(__file__).parent / "data" / "penalty_capture.sh"
NOAUTH = "connections without attempting authentication"


def ensure_trixie() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    root, stamp = CACHE / "trixie-sshd", CACHE / "trixie-sshd.stamp"
    want = json.dumps({"suite": SUITE, "packages": PACKAGES})
    with open(CACHE / ".lock-trixie", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir() and stamp.exists() and stamp.read_text() == want:
            return root
        tmp = CACHE / "trixie-sshd.tmp"
        for d in (tmp, root):
            if d.exists():
                shutil.rmtree(d)
        r = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                            SUITE, str(tmp), MIRROR], capture_output=True, text=True,
                           timeout=1200)
        if r.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({r.returncode}): {r.stdout[-2000:]}"
                               f"{r.stderr[-2000:]}")
        tmp.rename(root)
        stamp.write_text(want)
    return root


def in_overlay(root: Path, tmp: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run argv in fresh mount and network namespaces with an overlay of root mounted;
    "{merged}" in argv is the overlay's path."""
    for d in ("upper", "work", "merged"):
        (tmp / d).mkdir(exist_ok=True)
    merged = str(tmp / "merged")
    inner = ('mount --make-rprivate / && mount -t overlay overlay -o lowerdir="$1",'
             'upperdir="$2",workdir="$3" "$4" && shift 4 && exec "$@"')
    return subprocess.run(["unshare", "--mount", "--net", "--fork", "sh", "-c", inner, "sh",
                           str(root), str(tmp / "upper"), str(tmp / "work"), merged,
                           *(a.replace("{merged}", merged) for a in argv)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def trixie() -> Path:
    return ensure_trixie()


def test_sshd_10_penalty_lines_parse_and_a_restart_forgives(trixie: Path, tmp_path: Path):
    r = in_overlay(trixie, tmp_path, ["sh", str(CAPTURE), "{merged}"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    pen = [ln for ln in lines if ln.startswith(("srclimit_penalise: ", "drop connection #"))]
    parsed = {ln: parse_line(ln) for ln in pen}
    assert all(parsed.values()), [ln for ln, p in parsed.items() if p is None]
    for ln, p in parsed.items():
        assert p is not None
        if ln.startswith("drop "):
            event = classify(ln)
            assert event is not None and event.kind is Kind.PENALTY
        else:
            assert classify(ln) is None  # the failure behind it is counted from its own line
    by = {(p.address, p.network is None, p.active) for p in parsed.values() if p}
    # noauth 20 s twice passes min 25 s: deferred, then activating; authfail 30 s: active.
    assert ("127.0.0.2", False, False) in by and ("2001:db8::2", False, False) in by
    active = [p for p in parsed.values() if p and p.network and p.active]
    assert {p.network for p in active} == {"127.0.0.2/32", "127.0.0.3/32", "2001:db8::2/128"}
    assert all(p.seconds is not None and 25 < p.seconds <= 40 for p in active), active
    assert any(ln.startswith("drop ") for ln in pen)
    # After SIGHUP the new listener accepts 127.0.0.2 (its 39 s had not run out): sshd
    # forgot the penalty, which is why the daemon carries penalties over its restarts.
    after = lines[lines.index("Received SIGHUP; restarting."):]
    assert any(ln.startswith("Connection from 127.0.0.2 ") for ln in after), after
    assert not any(ln.startswith("drop connection") for ln in after), after


def test_sshd_10_T_settings(trixie: Path, tmp_path: Path):
    script = ('mount -t proc proc "$1/proc" && mkdir -p "$1/run/sshd" && '
              'chroot "$1" ssh-keygen -A >/dev/null && exec chroot "$1" /usr/sbin/sshd -T '
              '-o PerSourceNetBlockSize=24:56 -o PerSourcePenaltyExemptList=192.0.2.0/24')
    r = in_overlay(trixie, tmp_path, ["sh", "-c", script, "sh", "{merged}"])
    assert r.returncode == 0, r.stderr
    sshd_t = dict(ln.split(" ", 1) for ln in r.stdout.splitlines() if " " in ln)
    s = parse_settings(sshd_t)
    assert s is not None and s.enabled
    assert (s.ipv4_bits, s.ipv6_bits, s.exempt, s.minimum, s.maximum) == (
        24, 56, ("192.0.2.0/24",), 15, 600)
    assert s.per_offence(NOAUTH) == 1 and s.per_offence("failed authentication") == 5


if __name__ == "__main__":  # scripts/test.sh, while the Debian mirror is reachable
    import sys

    if sys.argv[1:] != ["--prepare-rootfs"]:
        sys.exit("usage: test_penalties_sshd10.py --prepare-rootfs")
    print(f"Debian 13 root filesystem: {ensure_trixie()}")
