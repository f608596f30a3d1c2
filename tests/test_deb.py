"""The .deb: built with packaging/deb/build.sh from the hash-checked wheelhouse, installed
with `apt-get install ./sshguardd_*.deb` in a Debian container booted with systemd and no
network at all (nspawn --private-network, and the test suite's own namespace has none
either), where the daemon reaches running. Then removal lifts the bans, a reinstall keeps
them lifted and starts again, and purge removes config and state.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshguardd import __version__
from sshguardd.demo.sandbox import wait_for
from test_container import Container, ensure_rootfs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.container, pytest.mark.e2e]
BANNED = "192.0.2.77"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    t0 = time.monotonic()
    r = subprocess.run([str(ROOT / "packaging/deb/build.sh"), str(out)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"deb build: {time.monotonic() - t0:.1f} s")
    [path] = out.glob("sshguardd_*.deb")
    return path


@pytest.fixture(scope="module")
def host(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    work = tmp_path_factory.mktemp("deb-host")
    c = Container(ensure_rootfs(), f"sshgd-deb-{os.getpid()}", work,
                  binds_ro=[(deb.parent, "/debs")])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _banned(c: Container) -> bool:
    r = c.run(["nft", "-j", "list", "table", "inet", "sshguardd"])
    return r.returncode == 0 and f'"{BANNED}"' in r.stdout


def test_control_file_and_contents(deb: Path) -> None:
    fields = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                            check=True).stdout
    assert f"Version: {__version__}-1" in fields
    assert "Depends: python3.11, nftables, openssh-server, systemd, libsystemd0" in fields
    files = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                           check=True).stdout
    for path in ("./usr/bin/sshguardd", "./usr/lib/systemd/system/sshguardd.service",
                 "./usr/lib/systemd/catalog/sshguardd.catalog",
                 "./usr/share/sshguardd/config.example.toml",
                 "./usr/share/man/man8/sshguardd.8.gz",
                 "./usr/lib/sshguardd/sshguardd/cli.py",
                 "./usr/lib/sshguardd/systemd/journal.py"):
        assert path in files, path
    # The same pins the RPM bundles, and no build tool.
    pins = dict(line.split()[0].split("==") for line in
                (ROOT / "packaging/requirements.txt").read_text().splitlines()
                if line[:1].isalpha() and not line.endswith("# build"))
    for name, version in pins.items():
        dist = name.replace("-", "_")
        assert f"/usr/lib/sshguardd/{dist}-{version}.dist-info/" in files.replace(
            dist.replace("_", "-").lower(), dist), name
    assert "/usr/lib/sshguardd/setuptools" not in files
    assert "/etc/sshguardd/config.toml" not in files  # written by postinst, kept on upgrade


def test_apt_installs_offline_and_reaches_running(host: Container, deb: Path) -> None:
    c = host
    # No network in here: not even a default route.
    assert c.run(["ip", "-4", "route", "show", "default"]).stdout.strip() == ""
    t0 = time.monotonic()
    r = c.run(["apt-get", "install", "-y", "--no-install-recommends", f"/debs/{deb.name}"],
              timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"apt-get install ./{deb.name} with no network: {took:.1f} s")
    # postinst showed what the daemon would change before starting it.
    assert "what sshguardd" in r.stdout and "+PermitRootLogin no" in r.stdout, r.stdout
    assert f"sshguardd {__version__}-1 is enabled and running" in r.stdout
    s = c.show("sshguardd", "ActiveState", "SubState", "UnitFileState", "FragmentPath")
    assert (s["ActiveState"], s["SubState"], s["UnitFileState"]) == (
        "active", "running", "enabled"), s
    # /lib is /usr/lib on Debian 12 (merged /usr); systemd reports the first it searches.
    assert s["FragmentPath"] in ("/usr/lib/systemd/system/sshguardd.service",
                                 "/lib/systemd/system/sshguardd.service"), s
    status = json.loads(c.run(["sshguardd", "status", "--json"], check=True).stdout)
    assert status["version"] == __version__
    assert c.run(["head", "-1", "/usr/bin/sshguardd"]).stdout == "#!/usr/bin/python3.11 -I\n"
    # Fleet mode's client is bundled and imports with the target's python3.11 (Debian 12's
    # 3.11.2: redis-py then imports async-timeout), with its compiled parser.
    fleet = c.run(["python3.11", "-I", "-c",
                   ("import sys; sys.path.insert(0, '/usr/lib/sshguardd'); import redis, "
                    "redis.utils; print(redis.__file__, redis.utils.HIREDIS_AVAILABLE)")],
                  check=True).stdout.split()
    assert fleet == ["/usr/lib/sshguardd/redis/__init__.py", "True"], fleet
    eff = c.run(["sshd", "-T", "-C", "user=root,host=x,addr=192.0.2.9"], check=True).stdout
    assert "permitrootlogin no" in eff


def test_remove_lifts_bans_and_reinstall_keeps_them_lifted(host: Container, deb: Path) -> None:
    c = host
    c.run(["sshguardd", "ban", BANNED], check=True)
    wait_for(lambda: _banned(c), timeout=20, what="the manual ban in nft")
    r = c.run(["apt-get", "remove", "-y", "sshguardd"], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert c.run(["nft", "list", "table", "inet", "sshguardd"]).returncode != 0
    assert c.run(["test", "-e", "/etc/sshguardd/config.toml"]).returncode == 0
    r = c.run(["apt-get", "install", "-y", f"/debs/{deb.name}"], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keeping the existing /etc/sshguardd/config.toml" in r.stdout
    assert c.show("sshguardd", "ActiveState")["ActiveState"] == "active"
    bans = json.loads(c.run(["sshguardd", "bans", "--json"], check=True).stdout)
    assert bans == [], bans
    assert not _banned(c)


def test_purge_removes_config_and_state(host: Container) -> None:
    c = host
    r = c.run(["apt-get", "purge", "-y", "sshguardd"], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert c.show("sshguardd", "LoadState")["LoadState"] == "not-found"
    for path in ("/etc/sshguardd", "/var/lib/sshguardd", "/usr/bin/sshguardd",
                 "/usr/lib/sshguardd"):
        assert c.run(["test", "-e", path]).returncode != 0, path
