"""The drift guard's profile half: which policy the profile makes, and its file controls.

The keyword controls become the drift guard's policy (keyword -> value a repair writes,
plus the bounds that judge them), so they are judged and repaired by the same transaction
as ever (daemon/sshd_repair: only that setting, `sshd -t`, restart, verify, lockout
guard). The file controls (owner and mode of sshd_config, its drop-ins and the host keys)
are judged here on every sshd check; an enforced one is repaired only where that is safe
(effects/profile_files.tighten: a root-owned regular file, through an O_NOFOLLOW
descriptor), everything else is alerted and left for a person.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from sshguardd import config
from sshguardd.daemon.drift_report import Outcome, Report
from sshguardd.drift import profiles
from sshguardd.drift.profiles import FileState
from sshguardd.drift.sshd_model import SshdConfig
from sshguardd.effects import profile_files

log = logging.getLogger(__name__)


class ProfileGuard:
    """Built from [drift]; raises config.ConfigError for a broken profile or a
    profile_enforce entry it cannot enforce. inspect/tighten are the file effects."""

    def __init__(self, dc: config.DriftConfig, alerts: Any, *,
                 inspect: Callable[[str], FileState] = profile_files.inspect,
                 tighten: Callable[[profiles.FileControl, str], str] = profile_files.tighten):
        self.profile = profile_files.load(dc.profile)
        problems = self.profile.check_opt_in(dc.profile_enforce)
        if problems:
            raise config.ConfigError(dc.profile, problems)
        self.opt_in = dc.profile_enforce
        self.targets, self.rules = profiles.policy(self.profile, dc.sshd_settings,
                                                   dc.profile_enforce)
        self.alerts = alerts
        self.inspect = inspect
        self.tighten = tighten

    def check_files(self, model: SshdConfig, sshd_t: Mapping[str, str] | None,
                    enforcing: bool, report: Report) -> list[Outcome]:
        """Judge every file control; in enforce mode repair the enforced ones it safely
        can. One Outcome per file judged."""
        hostkeys = [k for k in (sshd_t or {}).get("hostkey", "").split("\n") if k]
        out: list[Outcome] = []
        for control in self.profile.file:
            enforce = control.action == "enforce" or control.id in self.opt_in
            for path in profiles.file_paths(control.files, model.main, model.files,
                                            hostkeys):
                out.append(self._one(control, path, enforce and enforcing, report))
        return out

    def _one(self, control: profiles.FileControl, path: str, repair: bool,
             report: Report) -> Outcome:
        item = f"{control.id} file modes"
        st = self.inspect(path)
        problems = control.problems(st)
        want = control.describe()
        if not problems:
            report.standing.pop((item, path), None)
            return Outcome(item, path, "ok", "", want)
        now = "; ".join(problems)
        if report.new((item, path), now):
            report.count("drift_detected", setting=item, file=path)
            self.alerts.drift(item, path, want, now)
        if not repair:
            return report.refuse(item, path, now, want, "reported, not enforced "
                                 f"({control.action}, or audit mode)", action="drift",
                                 kind="audit_mode")[0]
        try:
            done = self.tighten(control, path)
        except OSError as exc:
            return report.refuse(item, path, now, want, f"not repaired: {exc}")[0]
        log.info("repaired %s of %s: %s", item, path, done)
        self.alerts.repaired(item, path, now, done)
        report.count("drift_repaired", setting=item, file=path)
        report.standing.pop((item, path), None)
        return Outcome(item, path, "repaired", now, want, done)
