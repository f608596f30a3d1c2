"""The drift guard: judge sshd's effective configuration and root's password against the
policy and (in enforce mode) put back exactly what drifted.

Convergent, not event-driven: every call judges everything in its domain again from the
files as they are now (sshd's files, or /etc/shadow and /etc/passwd), so a missed or
merged inotify event can only delay a verdict, never make it wrong. The daemon calls it
on its loop thread only: `check_all()` at start, on SIGHUP and when `next_wakeup()` comes,
`handle()` per debounced FileChanged (filtered by the immutable `watch_set()` snapshot).

sshd's side: the model (sshguardd.drift.sshd_model, reading lines exactly as sshd does)
says which line sets what; sshd's own answers (`sshd -T`, and `sshd -T -C` for root and
an ordinary user connecting from an outside address) decide what is in force. A drift
only sshd sees, or a line the model is not sure it reads as sshd does, is alerted and
refused (`repair_refused`), never guessed at. The repair itself is the transaction in
sshguardd.daemon.sshd_repair; root's password is sshguardd.daemon.shadow_repair.

What it never does: touch a setting the policy does not name, change any line but the one
that wins (or add one where nothing sets it), kill or signal sshd processes serving
sessions (the restart command is the distribution's unit restart, which on Debian and RHEL
keeps sessions: KillMode=process), or change shadow fields but root's (or empty) password.

Revert wars (max_reverts repairs in `window` pause an item): drift.revert_war,
daemon.revert_pauses. Lockout: drift.lockout. Profiles, file modes: daemon.profile_guard.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sshguardd import config, contracts
from sshguardd.daemon.command_line import CommandLines, refusal
from sshguardd.daemon.drift_report import Outcome, Report
from sshguardd.daemon.lockout_guard import LockoutGuard, ec2_ways
from sshguardd.daemon.profile_guard import ProfileGuard
from sshguardd.daemon.revert_pauses import Pause, Pauses
from sshguardd.daemon.shadow_repair import ShadowRepair
from sshguardd.daemon.sshd_repair import SshdRepair, digest
from sshguardd.drift import lockout, revert_war, sshd_cmdline, sshd_judge, sshd_model
from sshguardd.drift.sshd_judge import Finding
from sshguardd.effects import sshd_files, swap
from sshguardd.effects.accounts import Accounts
from sshguardd.effects.shadow_file import ShadowFile
from sshguardd.effects.sshd import Sshd
from sshguardd.effects.sshd_unit import SshdUnit
from sshguardd.effects.writer_hint import CONFIG_WRITERS, SHADOW_WRITERS, journal_writer, writer_of

log = logging.getLogger(__name__)

# A full re-check this often, whatever inotify said: the kernel drops events when its
# queue overflows, and what the lockout guard reads (authorized_keys) is not watched, so
# a refused repair is retried once keys appear.
RECHECK_INTERVAL = 300.0
# The ordinary user of the cross-check: no real account, so only Match blocks that name
# no user (Address, "User *", ...) apply to it, as to an attacker's guesses.
PROBE_USER = "sshguardd-probe"
MAX_REPLANS = 2  # a file that keeps changing under the repair is left to the next event
UNCOUNTED = ("start", "reload")  # our own repairs (check_all reasons): no revert war


def _read_bytes(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


class DriftGuard:
    """Effects arrive through the constructor with production defaults: runner (sshd -t/-T
    and restart), shadow_file (the locked writer), passwd, clock. alerts and metrics are
    anything with the methods/attributes of alerts.Alerts and metrics.Metrics (metrics may
    be None). before_swap reaches the compare-and-swap replace (tests only). unit reads
    sshd's systemd unit for its command line (sshguardd.daemon.command_line)."""

    def __init__(self, cfg: config.Config, *, alerts: Any, metrics: Any = None,
                 runner: Sshd | None = None, shadow_file: ShadowFile | None = None,
                 passwd: Path = Path("/etc/passwd"), ssh_dir: str = sshd_model.SSH_DIR,
                 clock: Callable[[], float] = time.time,
                 writer_hint: Callable[..., str | None] = journal_writer,
                 before_swap: Callable[[], None] | None = None,
                 unit: SshdUnit | None = None):
        self.cfg = cfg
        self.dc = cfg.drift
        self.alerts = alerts
        self.metrics = metrics
        self.passwd = Path(passwd)
        self.shadow = shadow_file or ShadowFile(self.dc.shadow, passwd=self.passwd,
                                                before_swap=before_swap)
        self.ssh_dir = ssh_dir
        self.clock = clock
        self.writer_hint = writer_hint
        self.repairer = SshdRepair(runner or Sshd(self.dc.sshd,
                                                  restart=self.dc.restart_command),
                                   Path(cfg.daemon.state_dir), clock=clock,
                                   before_swap=before_swap)
        self.shadow_repair = ShadowRepair(self.shadow)
        self.cmdlines = CommandLines(unit)
        self.lockout = LockoutGuard(
            Accounts(self.runner, passwd=self.passwd),
            tmp_root=Path(cfg.daemon.state_dir) / "tmp", shadow=self.shadow.read,
            lock_root=self.dc.shadow_policy.lock_root and self.enforcing, clock=clock,
            host_ways=ec2_ways(cfg))
        self.profile = ProfileGuard(self.dc, alerts)  # [drift] profile: policy, file modes
        self.policy, self.rules = self.profile.targets, self.profile.rules
        for problem in sshd_judge.policy_problems(self.policy):
            alerts.startup_problem("drift policy", problem)
        rw = self.dc.revert_war
        self.wars = Pauses(revert_war.RevertWars(rw.max_reverts, rw.window, rw.pause),
                           Path(cfg.daemon.state_dir))
        self._own: dict[str, str | None] = {}           # path -> digest we last wrote
        self.report = Report(alerts, metrics)
        self._last_full: float | None = None  # clock time of the last check_all
        self._watch: contracts.WatchSet | None = None

    # ------------------------------------------------------------------ public seam

    @property
    def runner(self) -> Sshd:
        return self.repairer.runner

    @runner.setter
    def runner(self, value: Sshd) -> None:
        self.repairer.runner = value

    @property
    def enforcing(self) -> bool:
        return self.dc.mode == "enforce"

    def watch_set(self) -> contracts.WatchSet:
        """The immutable snapshot of what to watch, as of the last judgment (read from
        the files if nothing was judged yet)."""
        if self._watch is None:
            try:
                self._watch = sshd_files.load(self.main, self.ssh_dir).watch_set(self._extra)
            except (OSError, sshd_model.ConfigSyntaxError) as exc:
                log.warning("cannot read %s to find what to watch: %s", self.main, exc)
                return self._fallback_watch()
        return self._watch

    def watch_paths(self) -> list[Path]:  # directories to watch (the snapshot's)
        return [Path(p) for p in self.watch_set().dirs]

    def is_relevant(self, path: str) -> bool:
        return self.watch_set().relevant(path)

    @property
    def main(self) -> str:  # the unit's `-f`, else drift.sshd_config
        return self.cmdlines.current.config or str(self.dc.sshd_config)

    @property
    def _extra(self) -> tuple[str, ...]:  # sshd's unit files: a drop-in edit is judged
        return (str(self.dc.shadow), str(self.passwd), *self.cmdlines.current.files)

    def check_all(self, reason: str = "check") -> list[Outcome]:
        """Judge everything now and, in enforce mode, repair what drifted."""
        if not self.dc.enabled:
            return []
        log.debug("drift check: %s", reason)
        now = self.clock()
        self._last_full = now
        for key in self.wars.expire(now):
            log.info("revert-war pause over for %s in %s: repairing again", *key)
        self.wars.counting = reason not in UNCOUNTED  # handle() always counts
        return self._check_sshd() + self._check_shadow()

    def paused(self) -> list[Pause]:  # the revert-war pauses in force now (for status)
        return self.wars.current(self.clock())

    def resume(self, item: str | None = None) -> list[Pause]:  # then call check_all
        return self.wars.resume(item)

    def handle(self, changed: contracts.FileChanged) -> list[Outcome]:
        """React to one changed path: judge its domain again. Our own writes and
        unrelated paths are ignored."""
        if not self.dc.enabled:
            return []
        self.wars.counting = True
        path = changed.path
        if not self.watch_set().relevant(path):
            return []
        if path in self._own and self._own[path] == digest(_read_bytes(path)):
            log.debug("ignoring our own write to %s", path)
            return [Outcome("(own write)", path, "ignored")]
        self._own.pop(path, None)
        started = time.monotonic()
        if path in (str(self.dc.shadow), str(self.passwd)):
            out = self._check_shadow()
        else:
            out = self._check_sshd()
        log.debug("handled a change of %s in %.0f ms, %.0f ms after it was reported",
                  path, 1000 * (time.monotonic() - started),
                  1000 * (self.clock() - changed.time))
        return out

    def next_wakeup(self) -> float | None:
        """When (clock time) the daemon should call check_all next: when a revert war's
        pause ends, and every RECHECK_INTERVAL in any case."""
        due = [t for t in (self.wars.next_wakeup(),) if t is not None]
        if self._last_full is not None:
            due.append(self._last_full + RECHECK_INTERVAL)
        return min(due, default=None)

    # ------------------------------------------------------------------ sshd_config

    def _fallback_watch(self) -> contracts.WatchSet:
        main, shadow = self.main, str(self.dc.shadow)
        dirs = tuple(dict.fromkeys(d for d in (os.path.dirname(main), os.path.dirname(shadow),
                                               os.path.dirname(str(self.passwd)))
                                   if os.path.isdir(d)))
        old = self._watch or contracts.WatchSet(())
        return contracts.WatchSet(tuple(dict.fromkeys(old.dirs + dirs)),
                                  old.files | {main, shadow, str(self.passwd)}, old.patterns)

    def _check_sshd(self, replans: int = 0) -> list[Outcome]:
        cmd = self.cmdlines.load(self.runner)
        main = self.main
        try:
            loaded = sshd_files.load(main, self.ssh_dir)
        except (OSError, sshd_model.ConfigSyntaxError) as exc:
            # A FIFO drop-in included: reported here, before sshd is run on it (sshd
            # would block on it, and so would we).
            detail = str(exc)
            self.report.once("parse", detail, "repair_failed", "read", main, None, detail)
            self.report.count("repair_failures", step="parse")
            return [Outcome("sshd_config", main, "failed", detail=detail)]
        self._watch = loaded.watch_set(self._extra)
        model, texts = loaded.model, loaded.texts
        if main not in texts:
            # Mid-rename, or removed: the rename's own event brings us back here.
            self.report.once("parse", "missing", "repair_failed", "parse", main, None,
                       "file is missing")
            return [Outcome("sshd_config", main, "failed", detail="file is missing")]
        self.report.alerted.pop("parse", None)
        sshd_t, answers, invalid = self.repairer.ask(main, (
            dict(sshd_judge.PROBE_DEFAULTS), {**sshd_judge.PROBE_DEFAULTS, "user": PROBE_USER}))
        findings = sshd_cmdline.relocate(sshd_judge.judge(model, self.policy, sshd_t,
                                                          self.rules), cmd)
        for note in sshd_judge.disagreements(model, sshd_t or {}, {
                k: v for k, v in self.policy.items() if k not in sshd_cmdline.keywords(cmd)}):
            log.warning("%s; trusting sshd", note)
        known = {(f.keyword, sshd_model.normalise_value(f.keyword, f.actual))
                 for f in findings if not f.compliant}
        findings += sshd_judge.cross_check(answers, self.policy, known, self.rules)

        outcomes: list[Outcome] = []
        for loc, why in model.unsure:
            item = f"sshd_config line {loc.line}"
            if self.report.new((item, loc.file), why):
                self.report.count("drift_detected", setting="unreadable line", file=loc.file)
                self.alerts.drift(item, loc.file, "a line read as sshd reads it", why)
            outcomes += self.report.refuse(item, loc.file, why, "", f"the model may not read "
                                     f"{loc} as sshd does ({why}); fix it by hand",
                                     action="drift", kind="unreadable_line")
        todo: list[Finding] = []
        guarded: list[Finding] = []
        for f in findings:
            file = str(f.source.file) if f.source else main
            if f.compliant:
                for key in ((f.item, file), ("lockout", f.item, file), ("refused", f.item, file)):
                    self.report.standing.pop(key, None)
                outcomes.append(Outcome(f.item, file, "ok", f.actual, f.expected))
                continue
            if self.report.new((f.item, file), f.actual):
                self.report.count("drift_detected", setting=f.keyword, file=file)
                self.alerts.drift(f.item, file, f.expected, f.actual)
            if cmd.owns(f.source) or not self.enforcing:
                outcomes += self.report.refuse(
                    f.item, file, f.actual, f.expected, refusal(cmd, f) if cmd.owns(
                        f.source) else "audit mode: not repaired", action="drift",
                    kind="command_line" if cmd.owns(f.source) else "audit_mode")
                continue
            if f.context:
                outcomes += self.report.refuse(f.item, file, f.actual, f.expected,
                                         f"sshd -T -C {f.context} says {f.actual}, but no "
                                         "line sshguardd reads sets it; repair by hand",
                                         kind="sshd_only")
                continue
            if f.keyword in lockout.GUARDED_KEYWORDS and self.dc.lockout_guard:
                # Judged together with the guarded repairs already let through.
                guard_reason = self.lockout.judge(model, texts, [*guarded, f])
                if not guard_reason:
                    guarded.append(f)
                if guard_reason:
                    if self.report.new(("lockout", f.item, file), guard_reason):
                        self.alerts.lockout_guard(guard_reason, f.item, file)
                        self.report.count("repairs_refused", reason="lockout_guard")
                        self.report.count("lockout_guard_refusals")
                    outcomes.append(Outcome(f.item, file, "refused", f.actual, f.expected,
                                            f"lockout guard: {guard_reason}"))
                    continue
            paused = self._paused_outcome((f.item, file), f.keyword, f.actual, f.expected,
                                          texts.get(file))
            if paused:
                outcomes.append(paused)
                continue
            todo.append(f)
        outcomes += self.profile.check_files(model, sshd_t, self.enforcing, self.report)
        if invalid is not None and not todo:
            self.report.once("invalid", digest("".join(texts.values()).encode(
                errors="surrogateescape")), "repair_failed", "validate", main, invalid.argv,
                invalid.stderr)
            self.report.count("repair_failures", step="validate")
            outcomes.append(Outcome("sshd_config", main, "failed",
                                    detail=f"sshd rejects the current configuration: "
                                           f"{invalid}"))
        if todo:
            result = self.repairer.repair(model, texts, todo)
            if result.ok:
                self.report.alerted.pop("invalid", None)
            if result.step == "conflict" and replans < MAX_REPLANS:
                log.warning("a file changed while being repaired (%s); judging again",
                            result.detail)
                self._own.update(result.written)
                return [o for o in outcomes if o.action != "ok"] + self._check_sshd(
                    replans + 1)
            outcomes += self._sshd_result(result, todo, main, texts)
        return outcomes

    def _sshd_result(self, result: Any, todo: list[Finding], main: str,
                     texts: dict[str, str]) -> list[Outcome]:
        self._own.update(result.written)
        if not result.ok:
            if result.step == "plan":
                return [o for f in todo for o in self.report.refuse(
                    f.item, str(f.source.file) if f.source else main, f.actual, f.expected,
                    result.detail)]
            self.report.count("repair_failures", step=result.step)
            if result.step == "restart":
                self.report.count("sshd_restarts", result="failure")
                self.alerts.restart_failed(result.argv, result.detail)
            if result.step == "validate" and not result.written:
                # Once per content: a config that stays broken is not re-alerted per event.
                self.report.once("candidate", digest("".join(texts.values()).encode(
                    errors="surrogateescape")), "repair_failed", "validate", main,
                    result.argv, result.detail)
            else:
                self.alerts.repair_failed(result.step, main, result.argv, result.detail)
            return [Outcome(f.item, str(f.source.file) if f.source else main, "failed",
                            f.actual, f.expected, f"{result.step}: {result.detail}")
                    for f in todo]
        self.report.count("sshd_restarts", result="success")
        out = []
        for f in todo:
            file = str(f.source.file) if f.source else main
            self.alerts.repaired(f.item, file, f.actual, f.expected)
            self.report.count("drift_repaired", setting=f.keyword, file=file)
            self.wars.record((f.item, file), self.clock())
            self.report.standing.pop((f.item, file), None)
            out.append(Outcome(f.item, file, "repaired", f.actual, f.expected))
        return out

    # ------------------------------------------------------------------ shadow

    def _check_shadow(self, replans: int = 0) -> list[Outcome]:
        sp = self.dc.shadow_policy
        path = str(self.dc.shadow)
        try:
            verdict = self.shadow_repair.judge()
        except OSError as exc:
            self.report.once("shadow-read", str(exc), "repair_failed", "read", path, None,
                       str(exc))
            return [Outcome("root password", path, "failed", detail=str(exc))]
        state, root_file = verdict.state, verdict.root_file
        outcomes: list[Outcome] = []
        lock_empty = False
        empty = list(verdict.empty)
        if empty and sp.empty_passwords != "ignore":
            self.report.count("drift_detected", setting="empty passwords", file=path)
            self.report.once("empty", tuple(empty), "drift", "empty passwords", path, "none",
                       ", ".join(empty))
            if sp.empty_passwords == "lock" and self.enforcing:
                lock_empty = True
            else:
                outcomes.append(Outcome("empty passwords", path, "drift", ", ".join(empty),
                                        "none", "alert only"))
        root_drift = sp.lock_root and state.root_present and not (
            state.root_locked and state.shadow_root_locked)
        if root_drift:
            if self.report.new(("root password", root_file), "unlocked"):
                self.report.count("drift_detected", setting="root password", file=root_file)
                self.alerts.drift("root password", root_file, "locked", "unlocked")
            if not self.enforcing:
                outcomes += self.report.refuse("root password", root_file, "unlocked", "locked",
                                         "audit mode: not repaired", action="drift",
                                         kind="audit_mode")
                root_drift = False
            else:
                paused = self._paused_outcome(("root password", root_file), "root password",
                                              "unlocked", "locked", None)
                if paused:
                    outcomes.append(paused)
                    root_drift = False
        elif sp.lock_root and state.root_present:
            self.report.standing.pop(("root password", root_file), None)
            self.report.standing.pop(("refused", "root password", root_file), None)
            outcomes.append(Outcome("root password", root_file, "ok", "locked", "locked"))
        if not root_drift and not lock_empty:
            return outcomes
        try:
            written = self.shadow_repair.relock(verdict, sp.lock_form, root_drift, lock_empty)
        except swap.Conflict as exc:
            if replans < MAX_REPLANS:
                log.warning("%s; judging again", exc)
                return self._check_shadow(replans + 1)
            return outcomes + self._fail_shadow(root_file, str(exc))
        except Exception as exc:  # ShadowFormatError, OSError, and any other fault
            if not isinstance(exc, (OSError, ValueError)):
                log.exception("relocking root's password raised")
            return outcomes + self._fail_shadow(root_file, f"{type(exc).__name__}: {exc}")
        for p, text in written.items():
            self._own[p] = digest(text.encode("utf-8", errors="surrogateescape"))
        if root_drift:
            self.alerts.repaired("root password", root_file, "unlocked", "locked")
            self.report.count("drift_repaired", setting="root password", file=root_file)
            self.wars.record(("root password", root_file), self.clock())
            self.report.standing.pop(("root password", root_file), None)
            outcomes.append(Outcome("root password", root_file, "repaired", "unlocked",
                                    "locked"))
        if lock_empty:
            self.alerts.repaired("empty passwords", path, ", ".join(empty), "locked")
            outcomes.append(Outcome("empty passwords", path, "repaired", ", ".join(empty),
                                    "locked"))
        return outcomes

    def _fail_shadow(self, path: str, detail: str) -> list[Outcome]:
        self.report.count("repair_failures", step="replace")
        self.alerts.repair_failed("replace", path, None, detail)
        return [Outcome("root password", path, "failed", detail=detail)]

    # ------------------------------------------------------------------ revert wars

    def _paused_outcome(self, key: tuple[str, str], setting: str, old: str, new: str,
                        text: str | None) -> Outcome | None:
        now = self.clock()
        verdict = self.wars.verdict(key, now)
        if verdict is None:
            return None
        file = key[1]
        if not verdict.started:
            return Outcome(key[0], file, "paused", old, new,
                           "revert war: " + self.wars.explain(key, verdict.until))
        shadowish = file in (str(self.dc.shadow), str(self.passwd))
        if text is None and not shadowish:
            text = (_read_bytes(file) or b"").decode(errors="replace")
        # What the file says about its manager first; else who logged as a known writer
        # during the war.
        tools = SHADOW_WRITERS if shadowish else CONFIG_WRITERS
        window = self.dc.revert_war.window
        writer = writer_of(file, text) or self.writer_hint(now - window, tools=tools)
        story = self.wars.started(key, verdict, now, writer or "unknown")
        self.alerts.revert_war(key[0], file, writer or "unknown", verdict.count,
                               until=verdict.until, resume=story.resume_hint())
        self.report.count("revert_wars", setting=setting, file=file)
        self.report.count("repairs_refused", reason="revert_war")
        return Outcome(key[0], file, "paused", old, new, f"revert war: {story.explain()}")

