"""Effects on sshd itself: `sshd -t` (validate), `sshd -T` (effective config, with `-C` for a
Match context), and restarting the service. Every failure carries the exact argv and stderr.

sshd -t/-T refuse to run without their privilege-separation directory (/run/sshd on
Debian, made by ssh.service's RuntimeDirectory=): with ssh.service stopped, or socket
activated before its first connection, it is missing. Then they run in a private mount
namespace with a fresh tmpfs on its parent holding an empty one, so the host's /run is
never changed (that /run hides the host's, which -t/-T do not read).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Mount a private tmpfs on the privsep dir's parent, make the dir, then exec sshd. A fixed
# script with the paths as positional arguments: nothing is ever spliced into it.
PRIVSEP_SCRIPT = ('mount -t tmpfs -o mode=755,size=1m tmpfs "$1" && mkdir -m 755 "$2" '
                  '&& shift 2 && exec "$@"')

# Debian/Ubuntu ship ssh.service (sshd.service is an alias there); RHEL, Fedora, SUSE and
# Amazon Linux ship sshd.service.
UNIT_CANDIDATES = ("ssh.service", "sshd.service")
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system",
             "/lib/systemd/system")


class ServiceError(RuntimeError):
    """A command about sshd failed. str() quotes the argv, exit status and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        status = "timed out" if returncode is None else f"exit {returncode}"
        super().__init__(f"{' '.join(self.argv)}: {status}: {self.stderr or '(no stderr)'}")


@dataclass(frozen=True, slots=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def find_restart_command(unit_dirs: Sequence[str] = UNIT_DIRS,
                         systemctl: str = "systemctl") -> tuple[str, ...]:
    """`systemctl restart UNIT` for whichever of ssh.service/sshd.service is installed (a
    symlinked alias counts as the unit it points to)."""
    for unit in UNIT_CANDIDATES:
        for d in unit_dirs:
            p = Path(d) / unit
            if p.exists() and not p.is_symlink():
                return (systemctl, "restart", unit)
    for unit in UNIT_CANDIDATES:
        for d in unit_dirs:
            if (Path(d) / unit).exists():
                return (systemctl, "restart", unit)
    return (systemctl, "restart", UNIT_CANDIDATES[0])


def parse_sshd_T(text: str) -> dict[str, str]:
    """`sshd -T` output to keyword -> value. A keyword printed on several lines (Port,
    ListenAddress, HostKey, ...) keeps all its values joined by newlines."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        key = key.lower()
        out[key] = f"{out[key]}\n{value}" if key in out else value
    return out


class Sshd:
    """Runs sshd's own checks and the restart command.

    sshd is the argv prefix for sshd (default the binary from the config; tests may prefix
    a wrapper); restart is the full restart argv (empty: found automatically); options are
    the settings sshd's unit passes on its command line (`-o Key=value`, `-p`, ...,
    sshguardd.effects.sshd_unit), given to every `sshd -t` and `sshd -T` so that they
    answer for the configuration sshd runs with, not the files alone.
    """

    def __init__(self, sshd: Sequence[str] | str | os.PathLike[str] = "/usr/sbin/sshd", *,
                 restart: Sequence[str] = (), timeout: float = 30.0,
                 env: Mapping[str, str] | None = None,
                 privsep_dir: str | None = "/run/sshd", unshare: str = "unshare",
                 options: Sequence[str] = ()):
        self.sshd = ((os.fspath(sshd),) if isinstance(sshd, (str, os.PathLike))
                     else tuple(sshd))
        self._restart = tuple(restart)
        self.timeout = timeout
        self.env = dict(env) if env is not None else None
        self.privsep_dir = privsep_dir
        self.unshare = unshare
        self.options = tuple(options)

    def _sshd_argv(self, *args: str) -> list[str]:
        """sshd's argv, wrapped in a private privsep dir when the real one is missing."""
        argv = [*self.sshd, *self.options, *args]
        if self.privsep_dir and not os.path.isdir(self.privsep_dir):
            parent = os.path.dirname(self.privsep_dir.rstrip("/")) or "/"
            argv = [self.unshare, "--mount", "--propagation", "private", "--",
                    "/bin/sh", "-c", PRIVSEP_SCRIPT, "sshd", parent, self.privsep_dir,
                    *argv]
        return argv

    @property
    def restart_argv(self) -> tuple[str, ...]:
        if not self._restart:
            self._restart = find_restart_command()
        return self._restart

    def _run(self, argv: Sequence[str], check: bool = True) -> Result:
        try:
            p = subprocess.run(list(argv), check=False, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=self.timeout,
                               env=self.env, errors="replace")
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) \
                else (exc.stderr or "")
            raise ServiceError(argv, None, err) from None
        except (OSError, ValueError) as exc:
            # ValueError: an argument with a NUL byte, which no exec can carry.
            raise ServiceError(argv, 127, str(exc)) from None
        res = Result(tuple(argv), p.returncode, p.stdout, p.stderr)
        if check and p.returncode != 0:
            raise ServiceError(argv, p.returncode, p.stderr)
        return res

    def test(self, config: Path | str) -> None:
        """`sshd -t -f CONFIG`: raises ServiceError (with sshd's complaint) if rejected."""
        self._run(self._sshd_argv("-t", "-f", os.fspath(config)))

    def effective(self, config: Path | str,
                  context: Mapping[str, str] | None = None) -> dict[str, str]:
        """`sshd -T -f CONFIG [-C user=..,host=..,addr=..]` parsed."""
        args = ["-T", "-f", os.fspath(config)]
        if context:
            args += ["-C", ",".join(f"{k}={v}" for k, v in context.items())]
        return parse_sshd_T(self._run(self._sshd_argv(*args)).stdout)

    def restart(self) -> None:
        self._run(self.restart_argv)
