"""The update watch, against the real package machinery.

- Version ordering is differential: ours against `dpkg --compare-versions` and rpm's own
  `rpm.vercmp`, on generated versions (hypothesis, a fixed budget) and golden pairs.
- apt: a sandbox (private mount, net and pid namespaces; /etc, /var and /usr
  copy-on-write) gets a local `file:` repository built here with dpkg-deb and
  apt-ftparchive, labelled as a security archive, that offers a newer openssh-server. The
  real PackageWatch, with a real sshd running, sees the candidate and its security origin
  after `apt-get update`, and after `apt-get install` sees the upgrade and the running
  sshd left on the replaced binary.
- rpm: a real rpm database made with `rpm --initdb --root`, holding an openssh-server
  package built with rpmbuild; dnf cannot run here, so only the installed version and its
  install time are read from the real database.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshguardd.contracts import PackageState
from sshguardd.daemon.update_watch import UpdateWatchStage
from sshguardd.demo.sandbox import Sandbox, wait_for
from sshguardd.drift import packages as pk
from sshguardd.effects.alerts import Alerts
from sshguardd.effects.metrics import Metrics
from sshguardd.effects.packages import PackageProbe

GOLDEN_DEB = [
    ("1.0", "1.0"), ("1.0~rc1", "1.0"), ("1:0.9", "2.0"), ("1.0-1", "1.0-1ubuntu0.1"),
    ("9.2p1-2+deb12u10", "9.2p1-2+deb12u9"), ("1:9.2p1-2+deb12u10", "1:9.2p1-2+deb12u10+t1"),
    ("1.0a", "1.0+"), ("1.0", "1.0.0"), ("1.01", "1.1"), ("1.0~~", "1.0~"), ("2a", "2"),
    ("0:1.0", "1.0"), ("1.0-0", "1.0"), ("10", "9"), ("1.0-1~bpo1", "1.0-1"),
]
GOLDEN_RPM = [
    ("1.0", "1.0"), ("1.0", "1.0a"), ("1.0~rc1", "1.0"), ("1.0^git1", "1.0"),
    ("1.0^git1", "1.0.1"), ("8.7p1", "8.7p2"), ("2.0", "10"), ("1.a", "1.1"), ("1..0", "1.0"),
    ("1.0", "1.0."), ("a", "1"), ("1.001", "1.1"), ("1.0~", "1.0~~"),
]

_deb_upstream = st.from_regex(r"\A[0-9][0-9A-Za-z.+~]{0,7}\Z")
_deb_revision = st.from_regex(r"\A[0-9A-Za-z.+~]{1,6}\Z")
deb_versions = st.builds(
    lambda e, u, r: (f"{e}:" if e is not None else "") + u + (f"-{r}" if r else ""),
    st.one_of(st.none(), st.integers(0, 3)), _deb_upstream,
    st.one_of(st.none(), _deb_revision))
rpm_versions = st.from_regex(r"\A[0-9A-Za-z.~^]{1,8}\Z")


def _dpkg_order(a: str, b: str) -> int:
    for op, value in (("lt", -1), ("eq", 0), ("gt", 1)):
        if subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0:
            return value
    raise AssertionError(f"dpkg cannot order {a!r} {b!r}")


def _sign(n: int) -> int:
    return (n > 0) - (n < 0)


def test_golden_debian_pairs_match_dpkg() -> None:
    for a, b in GOLDEN_DEB:
        assert _sign(pk.compare_debian(a, b)) == _dpkg_order(a, b), (a, b)
        assert _sign(pk.compare_debian(b, a)) == -_dpkg_order(a, b), (b, a)


DEB_CASES: list[int] = []


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(deb_versions, deb_versions)
def test_debian_order_matches_dpkg(a: str, b: str) -> None:
    DEB_CASES.append(1)
    assert _sign(pk.compare_debian(a, b)) == _dpkg_order(a, b), (a, b)


def _rpm_orders(pairs: list[tuple[str, str]]) -> list[int]:
    # One rpm process for all pairs: rpm's own rpmvercmp through its Lua binding.
    body = " ".join(f"print(rpm.vercmp({json.dumps(a)}, {json.dumps(b)}) .. ' ')"
                    for a, b in pairs)
    out = subprocess.run(["rpm", "--eval", "%{lua: " + body + "}"], capture_output=True,
                         text=True, check=True).stdout
    return [int(x) for x in out.split()]


def test_rpm_order_matches_rpm() -> None:
    pairs = list(GOLDEN_RPM)
    cases: list[tuple[str, str]] = []

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(rpm_versions, rpm_versions)
    def collect(a: str, b: str) -> None:
        cases.append((a, b))

    collect()
    pairs += cases
    expected = _rpm_orders(pairs)
    assert len(expected) == len(pairs)
    wrong = [(a, b, e) for (a, b), e in zip(pairs, expected, strict=True)
             if _sign(pk.compare_rpm(a, b)) != e]
    print(f"rpm differential: {len(pairs)} pairs")
    assert wrong == []


def test_debian_budget_was_spent() -> None:
    # The differential above really ran its cases (hypothesis did not give up early).
    print(f"dpkg differential: {len(DEB_CASES)} generated pairs + {len(GOLDEN_DEB)} golden")
    assert len(DEB_CASES) >= 100


def test_live_apt_policy_agrees_with_dpkg() -> None:
    """This machine's own apt-cache output parses to what dpkg says is installed."""
    env = {"LC_ALL": "C", "PATH": os.environ["PATH"]}
    text = subprocess.run(["apt-cache", "policy", "openssh-server"], capture_output=True,
                          text=True, env=env, check=True).stdout
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "openssh-server"],
                               capture_output=True, text=True, check=True).stdout
    pol = pk.parse_apt_policy(text)
    assert pol.installed == installed
    assert pol.candidate and any(o.version == pol.candidate for o in pol.offers)
    releases = pk.parse_apt_releases(subprocess.run(
        ["apt-cache", "policy"], capture_output=True, text=True, env=env, check=True).stdout)
    assert "/var/lib/dpkg/status" in releases
    # every source a version names is a package file apt lists
    for offer in pol.offers:
        for src in offer.sources:
            assert src in releases, src


def test_security_origin_is_judged_from_the_release() -> None:
    policy = pk.PackagePolicy("1:9.2p1-2+deb12u9", "1:9.2p1-2+deb12u10", (
        pk.Offer("1:9.2p1-2+deb12u10", ("http://d/debian bookworm/main amd64 Packages",)),
        pk.Offer("1:9.2p1-2+deb12u9", ("/var/lib/dpkg/status",)),
    ))
    plain = {"http://d/debian bookworm/main amd64 Packages":
             pk.Release("x", "Debian", "Debian", "oldstable", "bookworm")}
    assert pk.judge_apt(policy, plain) == pk.UpdateVerdict(
        "1:9.2p1-2+deb12u9", "1:9.2p1-2+deb12u10", True, False)
    sec = {"http://d/debian bookworm/main amd64 Packages":
           pk.Release("x", "Debian", "Debian-Security", "oldstable-security",
                      "bookworm-security")}
    assert pk.judge_apt(policy, sec).security
    ubuntu = {"http://d/debian bookworm/main amd64 Packages":
              pk.Release("x", "Ubuntu", "Ubuntu", "jammy-security", "jammy")}
    assert pk.judge_apt(policy, ubuntu).security


STALE_REASON = "listener pid 7 runs a replaced binary"


def test_stage_sets_metrics_and_alerts_once_per_change() -> None:
    metrics = Metrics()
    sent: list[tuple[str, dict[str, str]]] = []
    stage = UpdateWatchStage(metrics, Alerts(lambda msg, **f: sent.append((msg, f)),
                                             echo=False))
    base = PackageState("apt", "openssh-server", "1:9.2p1-2", "1:9.2p1-3", True, True, (),
                        False, (), 1000.0, None)
    stage.on_state(base)
    stage.on_state(dataclasses.replace(base, checked=1001.0))
    value = metrics.registry.get_sample_value
    assert value("sshguardd_openssh_update_pending", {"kind": "security"}) == 1
    assert value("sshguardd_openssh_info",
                 {"installed": "1:9.2p1-2", "candidate": "1:9.2p1-3"}) == 1
    assert [f["SSHGUARDD_ALERT"] for _, f in sent] == ["sshd_outdated"]
    assert sent[0][1]["SECURITY"] == "yes"
    # a failed check keeps the last finding and is counted
    stage.on_state(dataclasses.replace(base, error="apt-cache: exit 100", checked=1002.0))
    assert value("sshguardd_update_check_errors_total") == 1
    assert value("sshguardd_openssh_update_pending", {"kind": "security"}) == 1
    # upgraded, sshd not restarted: stale, one more alert; old info series gone
    stage.on_state(dataclasses.replace(base, installed="1:9.2p1-3", pending=False,
                                       security=False, stale=True,
                                       stale_reasons=(STALE_REASON,), checked=1003.0))
    assert value("sshguardd_sshd_stale") == 1
    assert value("sshguardd_openssh_info",
                 {"installed": "1:9.2p1-2", "candidate": "1:9.2p1-3"}) is None
    assert [f["STALE"] for _, f in sent] == ["no", "yes"]


# -- apt, for real ----------------------------------------------------------------------

_WATCH = """
import dataclasses, json, sys
from sshguardd.effects.packages import PackageProbe, PackageWatch
watch = PackageWatch(PackageProbe(), lambda s: print(json.dumps(dataclasses.asdict(s)),
                     flush=True), interval=3600, debounce=0.5)
watch.start()
sys.stdin.read()
watch.stop()
"""


def _build_repo(tmp: Path, version: str) -> Path:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    pkg = tmp / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/sbin").mkdir(parents=True)
    shutil.copy2("/usr/sbin/sshd", pkg / "usr/sbin/sshd")
    (pkg / "DEBIAN/control").write_text(
        f"Package: openssh-server\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: sshguardd tests <tests@example.invalid>\nSection: net\n"
        "Priority: optional\nDescription: test build of the SSH server\n"
        " Offered by a local security-labelled repository in a sandbox.\n")
    repo = tmp / "repo"
    repo.mkdir()
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg),
                    str(repo / "openssh-server_test.deb")], check=True, capture_output=True)
    packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=repo,
                              capture_output=True, text=True, check=True).stdout
    (repo / "Packages").write_text(packages)
    release = subprocess.run(
        ["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=Debian",
         "-o", "APT::FTPArchive::Release::Label=Debian-Security",
         "-o", "APT::FTPArchive::Release::Suite=stable-security",
         "-o", "APT::FTPArchive::Release::Codename=bookworm-security",
         "release", "."], cwd=repo, capture_output=True, text=True, check=True).stdout
    (repo / "Release").write_text(release)
    return repo


@pytest.mark.e2e
def test_apt_upgrade_is_seen_and_the_running_sshd_is_stale(tmp_path: Path) -> None:
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "openssh-server"],
                               capture_output=True, text=True, check=True).stdout
    newer = installed + "+sshguardd1"
    repo = _build_repo(tmp_path, newer)
    deny = tmp_path / "policy-rc.d"
    deny.write_text("#!/bin/sh\nexit 101\n")
    deny.chmod(0o755)
    with Sandbox(tmp_path, overlays=("/var", "/usr")) as sb:
        # Only the local repository: no other source (the sandbox has no network), and
        # no maintainer script may start or stop services.
        sb.run(["rm", "-f", "/etc/apt/sources.list"], check=True)
        sb.run(["find", "/etc/apt/sources.list.d", "-mindepth", "1", "-delete"], check=True)
        sb.run(["install", "-m", "0644", "/dev/null", "/etc/apt/sources.list.d/local.list"],
               check=True)
        sb.path("/etc/apt/sources.list.d/local.list").write_text(
            f"deb [trusted=yes] file:{repo} ./\n")
        sb.run(["install", "-m", "0755", str(deny), "/usr/sbin/policy-rc.d"], check=True)
        sshd = sb.start_sshd()
        assert sshd.poll() is None
        watch = sb.popen([sys.executable, "-c", _WATCH], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        states: list[dict[str, object]] = []

        def read() -> None:
            assert watch.stdout is not None
            for line in watch.stdout:
                states.append(json.loads(line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            first = wait_for(lambda: states[:1], 90, what="the first update check")[0]
            assert first["installed"] == installed and first["error"] is None
            assert first["pending"] is False and first["stale"] is False, first

            # The repository lies under pytest's root-only tmp dir: fetch as root, not _apt.
            sb.run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "update"], check=True,
                   timeout=120)
            t0 = time.monotonic()
            seen = wait_for(lambda: next((s for s in states if s["candidate"] == newer), None),
                            90, what="the new candidate after apt-get update")
            print(f"candidate seen {time.monotonic() - t0:.1f} s after apt-get update")
            assert seen["pending"] is True and seen["security"] is True, seen

            sb.run(["apt-get", "-q", "-y", "-o", "APT::Sandbox::User=root", "-o",
                    "Dpkg::Options::=--force-confold", "install", f"openssh-server={newer}"],
                   check=True, timeout=180)
            t0 = time.monotonic()
            after = wait_for(lambda: next((s for s in states if s["installed"] == newer
                                           and s["stale"]), None),
                             90, what="the upgrade and a stale sshd")
            print(f"upgrade seen {time.monotonic() - t0:.1f} s after apt-get install")
            assert after["pending"] is False and after["security"] is False, after
            assert any("listener" in r and "replaced binary" in r
                       for r in after["stale_reasons"]), after
        finally:
            if watch.stdin:
                watch.stdin.close()
            watch.wait(30)
            reader.join(10)
            assert watch.stdout is not None and watch.stderr is not None
            err = watch.stderr.read()
            watch.stdout.close()
            watch.stderr.close()
    if watch.returncode not in (0, None):
        pytest.fail(f"watch exited {watch.returncode}: {err}")


# -- rpm, for real ----------------------------------------------------------------------

def test_rpm_database_gives_the_installed_version(tmp_path: Path) -> None:
    top = tmp_path / "rpmbuild"
    spec = tmp_path / "openssh-server.spec"
    spec.write_text(
        "Name: openssh-server\nVersion: 8.7p1\nRelease: 38.el9\nEpoch: 0\n"
        "Summary: test package\nLicense: BSD\nBuildArch: noarch\n"
        "%description\ntest\n%files\n")
    subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", str(spec)],
                   check=True, capture_output=True)
    rpm_file = next((top / "RPMS").rglob("*.rpm"))
    root = tmp_path / "root"
    subprocess.run(["rpm", "--initdb", "--root", str(root)], check=True)
    before = time.time()
    subprocess.run(["rpm", "--root", str(root), "-i", "--nodeps", "--justdb",
                    str(rpm_file)], check=True, capture_output=True)
    probe = PackageProbe(backend="rpm", root=root, dnf="/nonexistent/dnf")
    state = probe.collect()
    assert state.error is None, state.error
    assert (state.installed, state.candidate, state.pending) == ("0:8.7p1-38.el9",
                                                                 "0:8.7p1-38.el9", False)
    text = subprocess.run(["rpm", "--root", str(root), "-q", "--qf", "%{INSTALLTIME}",
                           "openssh-server"], capture_output=True, text=True,
                          check=True).stdout
    assert int(text) >= int(before) - 1
    # a package that is not installed is an answer, not an error
    missing = PackageProbe("no-such-package", backend="rpm", root=root,
                           dnf="/nonexistent/dnf").collect()
    assert missing.error is None and missing.installed is None
