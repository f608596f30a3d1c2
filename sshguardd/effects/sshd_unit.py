"""Reading sshd's systemd unit: which files make its ExecStart, and what they say
(sshguardd.drift.sshd_cmdline models the text).

Which files: when systemd runs the host (`/run/systemd/system` exists, sd_booted(3)'s
test), `systemctl show -p Id,LoadState,FragmentPath,DropInPaths UNIT` answers: systemd's
own search path, aliases, generators and masks, exactly what it loaded. Without systemd as
PID 1 (a chroot, an image being built, a container, this project's test sandbox), or when
systemctl cannot answer, the same is found by walking the unit search path of
systemd.unit(5) ourselves: the first directory holding UNIT gives the fragment (a symlink
to another name is an alias, to /dev/null a mask); drop-ins are `*.conf` in `UNIT.d/` and
the top-level `service.d/` of every directory, a name in an earlier directory hiding the
same name in later ones, applied in file-name order.

The files are read from disk, not from what systemd has loaded: that is what the next
restart of sshd (ours, after a repair, included) runs with once `systemctl daemon-reload`
has seen them, and they carry the file:line a report must name. NeedDaemonReload=yes is
reported as a problem. Every file is opened as sshguardd.effects.sshd_files opens sshd's
(no FIFO stalls, regular files only, size-capped); we never write any of them.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sshguardd.drift import sshd_cmdline
from sshguardd.effects import sshd_files
from sshguardd.effects.sshd import UNIT_CANDIDATES

log = logging.getLogger(__name__)

# systemd.unit(5), "System Unit Search Path", highest priority first (generator and
# attached directories left out: they need a running systemd, which answers itself).
SEARCH_PATH = ("/etc/systemd/system.control", "/run/systemd/system.control",
               "/run/systemd/transient", "/etc/systemd/system", "/run/systemd/system",
               "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
               "/lib/systemd/system")
MAX_BYTES = 1 << 20
TIMEOUT = 10.0


class SshdUnit:
    """`load()` gives the CommandLine sshd's unit makes. units: the names to try in order
    (the first one installed is sshd's); booted: None asks sd_booted()'s question."""

    def __init__(self, units: Sequence[str] = UNIT_CANDIDATES, *,
                 search_path: Sequence[str] = SEARCH_PATH, booted: bool | None = None,
                 systemctl: str = "systemctl", timeout: float = TIMEOUT):
        self.units = tuple(units)
        self.search_path = tuple(search_path)
        self.booted = booted
        self.systemctl = systemctl
        self.timeout = timeout

    def load(self) -> sshd_cmdline.CommandLine:
        problems: list[str] = []
        booted = self.booted if self.booted is not None else os.path.isdir(
            "/run/systemd/system")
        found = self._from_systemd(problems) if booted else None
        if found is None:
            found = self._from_search_path()
        if found is None:
            return sshd_cmdline.CommandLine(problems=tuple(problems))
        unit, paths, masked = found
        if masked:
            return sshd_cmdline.CommandLine(unit, problems=tuple(
                problems + [f"{unit} is masked"]))
        files = []
        for p in paths:
            try:
                text = sshd_files.read_text(p, MAX_BYTES)
            except OSError as exc:
                problems.append(f"{p}: {exc}")
                continue
            if text is not None:
                files.append((p, text))
        cmd = sshd_cmdline.command_line(unit, files, self._read_env)
        if problems:
            cmd = sshd_cmdline.CommandLine(cmd.unit, cmd.files, cmd.exec_start, cmd.args,
                                           cmd.settings, cmd.config,
                                           tuple(problems) + cmd.problems)
        return cmd

    @staticmethod
    def _read_env(path: str) -> str | None:
        try:
            return sshd_files.read_text(path, MAX_BYTES)
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc)
            return None

    def _from_systemd(self, problems: list[str]) -> tuple[str, list[str], bool] | None:
        for unit in self.units:
            argv = [self.systemctl, "show", "-p",
                    "Id,LoadState,FragmentPath,DropInPaths,NeedDaemonReload", "--", unit]
            try:
                p = subprocess.run(argv, capture_output=True, text=True, check=False,
                                   stdin=subprocess.DEVNULL, timeout=self.timeout,
                                   errors="replace")
            except (OSError, subprocess.TimeoutExpired) as exc:
                problems.append(f"{' '.join(argv)}: {exc}; read the unit files instead")
                return None
            if p.returncode != 0:
                problems.append(f"{' '.join(argv)}: exit {p.returncode}: "
                                f"{p.stderr.strip()}; read the unit files instead")
                return None
            props = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
            state = props.get("LoadState", "")
            if state == "not-found" or not state:
                continue
            name = props.get("Id") or unit
            if props.get("NeedDaemonReload") == "yes":
                problems.append(f"{name}'s files changed since systemd loaded them "
                                "(systemctl daemon-reload is due): judged as written")
            if state == "masked":
                return name, [], True
            paths = [props["FragmentPath"]] if props.get("FragmentPath") else []
            paths += props.get("DropInPaths", "").split()
            return name, paths, False
        return None

    def _from_search_path(self) -> tuple[str, list[str], bool] | None:
        dirs = list(dict.fromkeys(self.search_path))
        for unit in self.units:
            for d in dirs:
                p = Path(d) / unit
                if not os.path.lexists(p):
                    continue
                if p.is_symlink() and os.readlink(p) == "/dev/null":
                    return unit, [], True
                real = os.path.realpath(p)
                name = os.path.basename(real) if p.is_symlink() else unit
                return name, [real, *self._dropins({unit, name}, dirs)], False
        return None

    @staticmethod
    def _dropins(names: set[str], dirs: Sequence[str]) -> list[str]:
        chosen: dict[str, str] = {}
        for d in dirs:
            for sub in ("service.d", *sorted(f"{n}.d" for n in names)):
                try:
                    entries = sorted(os.listdir(Path(d) / sub))
                except OSError:
                    continue
                for e in entries:
                    if e.endswith(".conf") and e not in chosen:
                        chosen[e] = str(Path(d) / sub / e)
        return [chosen[e] for e in sorted(chosen)
                if not (os.path.islink(chosen[e])
                        and os.readlink(chosen[e]) == "/dev/null")]
