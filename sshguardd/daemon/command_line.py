"""sshd's command line for the drift guard and `sshguardd check`: read from its unit on
every judgment (convergent: a drop-in added since is seen at the next one), handed to the
sshd runner so every `sshd -t/-T` includes it, and its problems logged once each.

A setting on the command line is judged like any other but never repaired: sshd_config
cannot override it, and sshguardd does not edit unit files (a unit belongs to its package
or to the admin's drop-in, like EC2 Instance Connect's; a wrong edit there stops sshd from
starting at all, with no `sshd -t` to catch it first). It is reported where it lives.
"""

from __future__ import annotations

import logging

from sshguardd.drift import sshd_cmdline
from sshguardd.drift.sshd_judge import Finding
from sshguardd.effects.sshd import Sshd
from sshguardd.effects.sshd_unit import SshdUnit

log = logging.getLogger(__name__)


class CommandLines:
    """`load(runner)`: the unit's CommandLine, now in force on runner."""

    def __init__(self, unit: SshdUnit | None = None):
        self.unit = unit if unit is not None else SshdUnit()
        self.current = sshd_cmdline.CommandLine()
        self._logged: set[str] = set()

    def load(self, runner: Sshd) -> sshd_cmdline.CommandLine:
        try:
            cmd = self.unit.load()
        except Exception as exc:  # an unreadable unit must not stop the judgment
            log.exception("reading sshd's unit failed")
            cmd = sshd_cmdline.CommandLine(problems=(f"reading sshd's unit failed: {exc}",))
        for p in cmd.problems:
            if p not in self._logged:
                log.warning("sshd's command line: %s", p)
        self._logged = set(cmd.problems)
        if cmd.settings != self.current.settings:
            for s in cmd.settings:
                log.info("sshd's command line sets %s %s (%s)", s.keyword, s.value,
                         s.location)
        self.current = cmd
        runner.options = cmd.args
        return cmd


def refusal(cmd: sshd_cmdline.CommandLine, f: Finding) -> str:
    """Why a finding set on the command line is reported, not repaired."""
    where = cmd.describe(f.source) if f.source is not None else "set on sshd's command line"
    return (f"{f.keyword} {f.actual} is {where}: the command line wins "
            "over sshd_config, and sshguardd does not edit unit files; remove it there "
            "(then systemctl daemon-reload and restart sshd)")
