"""The RPM builds with `rpmbuild -bb` here, and says and contains what it should.

One build per test session (about 30 s: a venv, systemd-python compiled, the vendored tree
byte-compiled); every test inspects that one package.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from sshguardd import __version__
from sshguardd.demo.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rpm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    topdir = tmp_path_factory.mktemp("rpmbuild")
    result = subprocess.run([str(ROOT / "packaging/rpm/build.sh"), str(topdir)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rpms = list((topdir / "RPMS").glob("*/sshguardd-*.rpm"))
    assert len(rpms) == 1, rpms
    return rpms[0]


def _rpm(*args: str) -> str:
    return subprocess.run(["rpm", *args], capture_output=True, text=True, check=True).stdout


def test_files_are_where_the_unit_and_docs_say(rpm_file: Path) -> None:
    files = set(_rpm("-qlp", str(rpm_file)).split())
    for path in ("/usr/bin/sshguardd",
                 "/usr/lib/systemd/system/sshguardd.service",
                 "/usr/lib/systemd/catalog/sshguardd.catalog",
                 "/etc/sshguardd/config.toml",
                 "/var/lib/sshguardd",
                 "/usr/share/man/man8/sshguardd.8",
                 "/usr/share/man/man5/sshguardd.toml.5",
                 "/usr/lib64/sshguardd/sshguardd/cli.py",
                 "/usr/lib64/sshguardd/systemd/journal.py"):
        assert path in files or path + ".gz" in files, path
    # The compiled dependencies are bundled, byte-compiled for python3.11 only.
    assert any(re.search(r"/pydantic_core/_pydantic_core\.cpython-311-.*\.so$", f) for f in files)
    assert any(f.endswith("cli.cpython-311.pyc") for f in files)
    assert not any(re.search(r"cpython-3(?!11)\d+\.pyc$", f) for f in files)
    assert not any(f.startswith("/usr/lib64/sshguardd/bin") for f in files)


def test_config_is_noreplace_and_state_dir_private(rpm_file: Path) -> None:
    flags = {}
    for line in _rpm("-qp", "--qf", "[%{FILEFLAGS:fflags}|%{FILEMODES:perms}|%{FILENAMES}\n]",
                     str(rpm_file)).splitlines():
        f, mode, name = line.split("|")
        flags[name] = (f, mode)
    assert flags["/etc/sshguardd/config.toml"][0] == "cn"  # %config(noreplace)
    assert flags["/var/lib/sshguardd"][1] == "drwx------"
    assert flags["/usr/bin/sshguardd"][1] == "-rwxr-xr-x"


def test_scriptlets_manage_the_unit(rpm_file: Path) -> None:
    scripts = _rpm("-qp", "--scripts", str(rpm_file))
    parts = dict(re.findall(r"^(\w+) scriptlet \(using /bin/sh\):\n(.*?)(?=^\w+ scriptlet|\Z)",
                            scripts, re.S | re.M))
    assert "install-system-units sshguardd.service" in parts["postinstall"]
    assert "remove-system-units sshguardd.service" in parts["preuninstall"]
    assert "mark-restart-system-units sshguardd.service" in parts["postuninstall"]
    # A plain install must not start a daemon that rewrites sshd_config unreviewed.
    assert "systemctl" not in scripts and "enable" not in scripts


def test_requires_are_honest(rpm_file: Path) -> None:
    requires = set(_rpm("-qpR", str(rpm_file)).split("\n"))
    for dep in ("python3.11", "/usr/bin/python3.11", "nftables", "openssh-server", "systemd"):
        assert dep in requires, dep
    assert any(r.startswith("libsystemd.so.0") for r in requires)  # systemd-python's module
    provides = _rpm("-qp", "--provides", str(rpm_file))
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) --hash=sha256:[0-9a-f]{64}$",
                           (ROOT / "packaging/requirements.txt").read_text(), re.M))
    assert len(pins) == 11, pins  # the build tools ("# build") are not bundled
    for name, version in pins.items():
        assert f"bundled(python3.11dist({name.lower()})) = {version}" in provides
    assert f"sshguardd = {__version__}-1" in provides


def test_vendor_pins_cover_the_project_dependencies() -> None:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = (ROOT / "packaging/requirements.txt").read_text().lower()
    for dep in deps:
        name = re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0].lower()
        assert f"\n{name}==" in pins, f"{name} is a dependency but not bundled in the RPM"


def test_every_pin_is_hash_checked() -> None:
    """One list for every install path: each requirement is pinned exactly and carries a
    sha256, so pip's --require-hashes mode accepts it (install.sh, bundle.sh)."""
    lines = [line for line in (ROOT / "packaging/requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines
    for line in lines:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][\w.]* --hash=sha256:[0-9a-f]{64}"
                            r"( # build)?", line), line
    for script in ("install.sh", "packaging/bundle.sh", "packaging/wheelhouse.sh"):
        text = (ROOT / script).read_text()
        assert "requirements.txt" in text and "--require-hashes" in text, script


def test_installed_payload_runs_with_python311(rpm_file: Path, tmp_path: Path) -> None:
    """Unpack the payload over a copy-on-write /usr, /etc and /var, then run the command."""
    subprocess.run(["rpm2archive", str(rpm_file)], check=True, cwd=tmp_path)
    archive = Path(f"{rpm_file}.tgz")
    try:
        with Sandbox(tmp_path, journald=False, overlays=("/var", "/usr")) as sb:
            with tarfile.open(archive) as tar:
                tar.extractall(sb.path("/"), filter="fully_trusted")
            launcher = sb.path("/usr/bin/sshguardd").read_text()
            assert launcher.startswith("#!/usr/bin/python3.11 -I\n")
            version = sb.run(["/usr/bin/sshguardd", "--version"], check=True).stdout
            assert version.strip() == f"sshguardd {__version__}"
            check = sb.run(["/usr/bin/sshguardd", "check-config"], check=True)
            assert check.stdout.strip() == \
                "/etc/sshguardd/config.toml: ok (drift guard: enforce, bans: on)"
            imports = sb.run(["/usr/bin/python3.11", "-I", "-c",
                              ("import sys; sys.path.insert(0, '/usr/lib64/sshguardd'); "
                              "import systemd.journal, pydantic_core, watchdog.observers; "
                              "print(systemd.journal.__file__); "
                              # fleet mode: redis-py with its compiled parser, under this
                              # host's python3.11 (Debian's 3.11.2 needs async-timeout)
                              "import redis, redis.utils; print(redis.__file__); "
                              "print(redis.utils.HIREDIS_AVAILABLE)")],
                             check=True).stdout.split()
            assert imports[0].startswith("/usr/lib64/sshguardd/systemd/")
            assert imports[1:] == ["/usr/lib64/sshguardd/redis/__init__.py", "True"]
    finally:
        archive.unlink(missing_ok=True)
    assert not Path("/usr/lib64/sshguardd").exists()
