"""install.sh, run for real inside a Sandbox whose /etc, /usr, /opt and /var are
copy-on-write: it installs, keeps an edited config, refuses where it cannot work, and
uninstalls (removing only its own nft table). The sandbox has no network, so pip installs
from the wheelhouse packaging/rpm/build.sh fills (the same pinned versions as the RPM).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from sshguardd import __version__
from sshguardd.demo.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
INSTALL = str(ROOT / "install.sh")
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    subprocess.run([str(ROOT / "packaging/rpm/build.sh"), "--wheelhouse-only"],
                   check=True, capture_output=True, timeout=600)
    return ROOT / "build" / "wheelhouse"


@pytest.fixture
def box(tmp_path: Path, wheelhouse: Path):
    with Sandbox(tmp_path, overlays=("/var", "/usr", "/opt")) as sb:
        sb.env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse),
                  "PIP_CONFIG_FILE": "/dev/null"}
        yield sb
    assert not Path("/opt/sshguardd").exists()  # the host never saw any of it


def test_installs_keeps_config_and_uninstalls(box: Sandbox) -> None:
    first = box.run([INSTALL, "--no-start"], env=box.env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "systemd is not PID 1" in first.stdout

    link = box.path("/usr/bin/sshguardd")
    assert os.readlink(link) == "/opt/sshguardd/bin/sshguardd"
    assert box.run(["sshguardd", "--version"], check=True).stdout.strip() == \
        f"sshguardd {__version__}"
    # Debian's python3-systemd comes through --system-site-packages, the rest from the venv.
    where = box.run(["/opt/sshguardd/bin/python", "-c",
                     ("import systemd, pydantic, redis; print(systemd.__file__); "
                      "print(pydantic.__file__); print(redis.__file__)")],
                    check=True).stdout.split()
    assert where[0].startswith("/usr/lib/python3/dist-packages/systemd/")
    assert where[1].startswith("/opt/sshguardd/lib/")
    assert where[2].startswith("/opt/sshguardd/lib/")  # fleet mode's client, from the pins

    config = box.path("/etc/sshguardd/config.toml")
    assert config.read_text() == (ROOT / "config.example.toml").read_text()
    assert stat.S_IMODE(box.path("/var/lib/sshguardd").stat().st_mode) == 0o700
    assert box.path("/etc/systemd/system/sshguardd.service").read_text() == \
        (ROOT / "packaging/systemd/sshguardd.service").read_text()
    assert box.path("/usr/local/lib/systemd/catalog/sshguardd.catalog").exists()
    assert box.path("/usr/local/share/man/man8/sshguardd.8").exists()
    assert box.path("/usr/local/share/man/man5/sshguardd.toml.5").exists()

    # Again, as an upgrade: the admin's config survives.
    config.write_text("[ban]\nmax_retry = 3\n")
    again = box.run([INSTALL, "--no-start"], env=box.env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "keeping the existing /etc/sshguardd/config.toml" in again.stdout
    assert config.read_text() == "[ban]\nmax_retry = 3\n"

    # Uninstall removes its table and only its table, keeps config and state.
    box.run(["nft", "add", "table", "inet", "sshguardd"], check=True)
    box.run(["nft", "add", "table", "inet", "admins_own"], check=True)
    gone = box.run([INSTALL, "--uninstall"], timeout=60)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    tables = box.run(["nft", "list", "tables"], check=True).stdout
    assert "admins_own" in tables and "sshguardd" not in tables
    for path in ("/usr/bin/sshguardd", "/opt/sshguardd", "/etc/systemd/system/sshguardd.service",
                 "/usr/local/lib/systemd/catalog/sshguardd.catalog"):
        assert not os.path.lexists(box.path(path)), path
    assert config.exists() and box.path("/var/lib/sshguardd").is_dir()

    purge = box.run([INSTALL, "--uninstall", "--purge"], timeout=60)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not box.path("/etc/sshguardd").exists()
    assert not box.path("/var/lib/sshguardd").exists()


def test_refuses_without_root(box: Sandbox) -> None:
    result = box.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                      "bash", INSTALL])
    assert result.returncode == 77
    assert "must run as root" in result.stderr
    assert not box.path("/opt/sshguardd").exists()


def test_refuses_when_nftables_cannot_work(box: Sandbox) -> None:
    box.path("/usr/sbin/nft").unlink()  # in the /usr overlay only
    result = box.run([INSTALL, "--no-start"], env=box.env)
    assert result.returncode == 69
    assert "nftables does not work here" in result.stderr
    assert not box.path("/opt/sshguardd").exists()
    assert not box.path("/etc/sshguardd").exists()


def test_refuses_other_distributions(box: Sandbox) -> None:
    os_release = box.path("/etc/os-release")
    os_release.unlink()  # a symlink to /usr/lib/os-release on Debian
    os_release.write_text('ID="rhel"\nID_LIKE="fedora"\nPRETTY_NAME="Red Hat Enterprise Linux 9"\n')
    result = box.run([INSTALL], env=box.env)
    assert result.returncode == 69
    assert "Red Hat Enterprise Linux 9" in result.stderr and "RPM" in result.stderr


def test_unknown_option_is_a_usage_error(box: Sandbox) -> None:
    result = box.run([INSTALL, "--frobnicate"])
    assert result.returncode == 64 and "unknown option '--frobnicate'" in result.stderr


def test_without_systemd_it_runs_the_daemon_in_the_foreground(box: Sandbox) -> None:
    import signal

    from sshguardd.demo.sandbox import wait_for

    proc = box.popen([INSTALL], env=box.env, stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, text=True)
    # install.sh execs `sshguardd run`: the metrics port opening means the daemon is up.
    wait_for(lambda: box.listening(9822) or proc.poll() is not None, 300,
             what="the foreground daemon")
    assert proc.poll() is None
    cmdline = Path(f"/proc/{box.inner_pid(proc)}/cmdline").read_bytes().split(b"\0")
    assert b"/usr/bin/sshguardd" in cmdline and b"run" in cmdline
    box.signal(proc, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert "running 'sshguardd run' in the foreground" in out
    assert proc.returncode == 0, out


def test_installed_command_runs_the_demo(box: Sandbox) -> None:
    """The newcomer's path: install.sh, then `sshguardd demo` from the installed venv (a
    sandbox inside this sandbox, its layers on the outer one's /run tmpfs)."""
    result = box.run([INSTALL, "--no-start"], env=box.env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # As after the daemon ran once: this host's sshd_config is hardened already. Before,
    # the demo then showed "stock Debian config ... permitrootlogin no" and repaired
    # nothing; it must start from the package's stock file instead (issue 12 item 8).
    conf = box.path("/etc/ssh/sshd_config")
    conf.write_text("PermitRootLogin no\nPasswordAuthentication no\n" + conf.read_text())
    box.run(["mkdir", "-p", "/run/demo"], check=True)
    demo = box.run(["sshguardd", "demo", "--non-interactive", "--workdir", "/run/demo"],
                   env={**os.environ, "NO_COLOR": "1"}, timeout=400)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "demo result: ok" in demo.stdout
    assert ("config: the package's stock /usr/share/openssh/sshd_config, since this host's "
            "own is not stock (hardened already?)") in demo.stdout, demo.stdout
    assert list(box.path("/run/demo").iterdir()) == []


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = [INSTALL, str(ROOT / "packaging/rpm/build.sh")]
    result = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
