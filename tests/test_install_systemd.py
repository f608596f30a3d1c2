"""install.sh on a host where systemd is PID 1: Debian booted in systemd-nspawn (the
container machinery of tests/test_container.py). It installs, enables and starts the unit,
which reaches READY; a second run keeps the config; --uninstall --purge removes the unit,
the program and the nft table.

The container has no network: Debian's python3-systemd comes from build/debs (fetched by
scripts/test.sh) and pip installs from the RPM's wheelhouse (build/wheelhouse).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshguardd import __version__

# The booted-container helpers live with the container test (same directory on sys.path).
from test_container import Container, ensure_rootfs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.container, pytest.mark.e2e]
PIP_OFFLINE = "PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    debs = sorted((ROOT / "build/debs").glob("python3-systemd_*.deb"))
    assert debs, "build/debs/python3-systemd_*.deb missing: scripts/test.sh fetches it"
    wheelhouse = ROOT / "build/wheelhouse"
    assert any(wheelhouse.glob("pydantic-*.whl")), "run packaging/rpm/build.sh --wheelhouse-only"
    work = tmp_path_factory.mktemp("install-systemd")
    c = Container(ensure_rootfs(), f"sshgd-install-{os.getpid()}", work,
                  binds_ro=[(ROOT, "/src"), (wheelhouse, "/wheelhouse"),
                            (debs[-1].parent, "/debs")])
    try:
        c.start()
        # What apt-get would have installed, had the container a network.
        c.sh(f"dpkg -i /debs/{debs[-1].name}", check=True)
        yield c
    finally:
        c.stop()


def test_install_enables_and_starts_then_uninstalls(host: Container) -> None:
    c = host
    r = c.sh(f"{PIP_OFFLINE} /src/install.sh", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sshguardd is enabled and running" in r.stdout
    s = c.show("sshguardd", "ActiveState", "SubState", "UnitFileState", "FragmentPath",
               "ExecMainStartTimestampMonotonic")
    assert (s["ActiveState"], s["SubState"], s["UnitFileState"]) == (
        "active", "running", "enabled"), s
    assert s["FragmentPath"] == "/etc/systemd/system/sshguardd.service"
    assert c.run(["sshguardd", "--version"], check=True).stdout.strip() == \
        f"sshguardd {__version__}"
    c.run(["nft", "list", "table", "inet", "sshguardd"], check=True)
    # The catalog was indexed: journalctl -x can explain sshguardd's alerts.
    catalog = c.run(["journalctl", "--list-catalog"], check=True).stdout
    assert "sshguardd" in catalog

    # Again, as an upgrade: the edited config is kept and the service keeps running.
    c.write("/etc/sshguardd/config.toml", "[ban]\nmax_retry = 4\n")
    r = c.sh(f"{PIP_OFFLINE} /src/install.sh", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keeping the existing /etc/sshguardd/config.toml" in r.stdout
    assert c.run(["cat", "/etc/sshguardd/config.toml"]).stdout == "[ban]\nmax_retry = 4\n"
    assert c.show("sshguardd", "ActiveState")["ActiveState"] == "active"

    r = c.sh("/src/install.sh --uninstall --purge", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    s = c.show("sshguardd", "LoadState", "ActiveState")
    assert s == {"LoadState": "not-found", "ActiveState": "inactive"}, s
    assert c.run(["nft", "list", "table", "inet", "sshguardd"]).returncode != 0
    for path in ("/opt/sshguardd", "/usr/bin/sshguardd", "/etc/sshguardd", "/var/lib/sshguardd"):
        assert c.run(["test", "-e", path]).returncode != 0, path
