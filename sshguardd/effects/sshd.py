"""Effects on sshd itself: `sshd -t` (validate), `sshd -T` (effective config, with `-C` for a
Match context), and restarting the service. Every failure carries the exact argv and stderr.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

log = logging.getLogger(__name__)

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
    a wrapper); restart is the full restart argv (empty: found automatically).
    """

    def __init__(self, sshd: Sequence[str] | str | os.PathLike[str] = "/usr/sbin/sshd", *,
                 restart: Sequence[str] = (), timeout: float = 30.0,
                 env: Mapping[str, str] | None = None):
        self.sshd = ((os.fspath(sshd),) if isinstance(sshd, (str, os.PathLike))
                     else tuple(sshd))
        self._restart = tuple(restart)
        self.timeout = timeout
        self.env = dict(env) if env is not None else None

    @property
    def restart_argv(self) -> tuple[str, ...]:
        if not self._restart:
            self._restart = find_restart_command()
        return self._restart

    def _run(self, argv: Sequence[str], check: bool = True) -> Result:
        try:
            p = subprocess.run(list(argv), capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=self.timeout,
                               env=self.env, errors="replace")
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) \
                else (exc.stderr or "")
            raise ServiceError(argv, None, err) from None
        except OSError as exc:
            raise ServiceError(argv, 127, str(exc)) from None
        res = Result(tuple(argv), p.returncode, p.stdout, p.stderr)
        if check and p.returncode != 0:
            raise ServiceError(argv, p.returncode, p.stderr)
        return res

    def test(self, config: Path | str) -> None:
        """`sshd -t -f CONFIG`: raises ServiceError (with sshd's complaint) if rejected."""
        self._run([*self.sshd, "-t", "-f", os.fspath(config)])

    def effective(self, config: Path | str,
                  context: Mapping[str, str] | None = None) -> dict[str, str]:
        """`sshd -T -f CONFIG [-C user=..,host=..,addr=..]` parsed."""
        argv = [*self.sshd, "-T", "-f", os.fspath(config)]
        if context:
            argv += ["-C", ",".join(f"{k}={v}" for k, v in context.items())]
        return parse_sshd_T(self._run(argv).stdout)

    def restart(self) -> None:
        self._run(self.restart_argv)
