"""The drift guard: judge sshd's effective configuration and /etc/shadow against the policy,
and (in enforce mode) put back exactly what drifted.

One repair of sshd's configuration is:
  judge (sshd_config model, cross-checked with `sshd -T`) -> plan the smallest edits ->
  write the candidate tree to a private temp dir (Include lines pointing at the copies) ->
  `sshd -t` on the whole candidate -> keep a copy of each drifted file and a unified diff
  in state_dir/drift -> replace each changed file atomically (owner, mode, SELinux label
  kept) -> `sshd -t` on the real files -> restart sshd.
If any step after the first write fails (or `sshd -T` does not confirm the repaired
values), the files as they were are written back and sshd is not restarted onto a
configuration it rejects. A configuration that sshd already rejects is left alone (an admin
may be half-way through an edit) and alerted, unless the repair is what makes sshd accept
it again: restarting onto it would take sshd down.

What it never does: touch a setting the policy does not name, change any line but the one
that wins (or add one where nothing sets it), kill or signal sshd processes serving
sessions (the restart command is the distribution's unit restart, which on Debian and RHEL
keeps existing sessions: KillMode=process), or change any shadow field but root's password
(and, only if configured, empty password fields).

Revert wars: each repair is recorded per (setting, file). When max_reverts repairs of the
same item happen within `window`, the guard stops repairing it for `pause`, raises a
critical alert naming the file and, when it can tell, the writer, and resumes afterwards
(`next_wakeup()` tells the daemon when to call `check_all`). How the writer is found:
sshguardd.effects.writer_hint. The lockout guard: sshguardd.drift.lockout.
"""

from __future__ import annotations

import collections
import concurrent.futures
import difflib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable, Literal

from sshguardd import config, contracts

from sshguardd.effects import files as atomic

from sshguardd.drift import lockout

from sshguardd.drift import shadow_rules as shadow

from sshguardd.drift import sshd_model as sshd_config
from sshguardd.effects.sshd import ServiceError, Sshd
from sshguardd.effects.writer_hint import CONFIG_WRITERS, SHADOW_WRITERS, journal_writer, writer_of

log = logging.getLogger(__name__)

Action = Literal["ok", "drift", "repaired", "refused", "failed", "paused", "ignored"]

KEEP_COPIES = 200  # drifted-file copies and diffs kept in state_dir/drift
# A full re-check this often, whatever inotify said: the kernel drops events when its
# queue overflows, and what the lockout guard reads (authorized_keys, /etc/passwd) is not
# watched, so a refused repair is retried once keys appear.
RECHECK_INTERVAL = 300.0

@dataclass(frozen=True, slots=True)
class Outcome:
    """What the guard did about one policy item. Never carries a password hash."""

    item: str            # e.g. "permitrootlogin", "permitrootlogin (Match User bob)",
                         # "root password", "empty passwords"
    file: str
    action: Action
    old: str = ""        # the drifted value ("unlocked" for root's password)
    new: str = ""        # the policy's value
    detail: str = ""


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _read_bytes(path: str | Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


class DriftGuard:
    """Hosted by the daemon: `check_all()` at start, on SIGHUP and when `next_wakeup()`
    comes; `handle()` for each (debounced) FileChanged from the watcher.

    Effects arrive through the constructor with production defaults: runner (sshd -t/-T
    and restart), shadow_file (the locked writer), passwd (for the lockout guard), clock.
    alerts and metrics are anything with the methods/attributes of alerts.Alerts and
    metrics.Metrics (metrics may be None).
    """

    def __init__(self, cfg: config.Config, *, alerts: Any, metrics: Any = None,
                 runner: Sshd | None = None, shadow_file: shadow.ShadowFile | None = None,
                 passwd: Path = Path("/etc/passwd"), ssh_dir: str = sshd_config.SSH_DIR,
                 clock: Callable[[], float] = time.time,
                 writer_hint: Callable[..., str | None] = journal_writer):
        self.cfg = cfg
        self.dc = cfg.drift
        self.alerts = alerts
        self.metrics = metrics
        self.runner = runner or Sshd(self.dc.sshd, restart=self.dc.restart_command)
        self.shadow = shadow_file or shadow.ShadowFile(self.dc.shadow)
        self.passwd = Path(passwd)
        self.ssh_dir = ssh_dir
        self.clock = clock
        self.writer_hint = writer_hint
        self.state_dir = Path(cfg.daemon.state_dir)
        self.policy = sshd_config.policy_items(self.dc.sshd_settings.model_dump())
        for problem in sshd_config.policy_problems(self.policy):
            alerts.startup_problem("drift policy", problem)
        self._lock = threading.RLock()
        self._own: dict[str, str | None] = {}        # path -> digest we last wrote
        self._reverts: dict[tuple[str, str], collections.deque[float]] = {}
        self._paused: dict[tuple[str, str], float] = {}
        self._alerted: dict[str, Any] = {}          # de-duplicates repeating alerts
        self._standing: dict[tuple[str, ...], str] = {}  # drifts alerted, still present
        self._model: sshd_config.SshdConfig | None = None
        self._last_sshd_t: dict[str, str] | None = None
        self._last_full: float | None = None  # clock time of the last check_all
        self._speculation: tuple[str, ServiceError | None] | None = None

    # ------------------------------------------------------------------ public seam

    @property
    def enforcing(self) -> bool:
        return self.dc.mode == "enforce"

    def watch_paths(self) -> list[Path]:
        """Directories to watch: the main config's, every Included one, the shadow's."""
        dirs: list[str] = []
        try:
            dirs = self._load_model().included_dirs
        except (OSError, sshd_config.ConfigSyntaxError) as exc:
            log.warning("cannot read %s to find Included dirs: %s", self.dc.sshd_config, exc)
            dirs = [str(self.dc.sshd_config.parent)]
        d = str(self.dc.shadow.parent)
        if d not in dirs:
            dirs.append(d)
        return [Path(p) for p in dirs if os.path.isdir(p)]

    def is_relevant(self, path: str) -> bool:
        """True if a change to path can change the verdict (main config, anything an
        Include pattern names or matches, the shadow file)."""
        if path in (str(self.dc.shadow), str(self.dc.sshd_config)):
            return True
        model = self._model
        if model is None:
            try:
                with self._lock:
                    model = self._load_model()
            except (OSError, sshd_config.ConfigSyntaxError):
                return os.path.dirname(path) == str(self.dc.sshd_config.parent)
        if path in model.files:
            return True
        for _loc, raw, _found in model.includes:
            parts = sshd_config.split_line(raw)
            for tok, _, _ in (parts[1] if parts else []):
                pattern = tok if tok.startswith("/") else f"{model.ssh_dir}/{tok}"
                if fnmatchcase(path, pattern) and not os.path.basename(path).startswith("."):
                    return True
        return False

    def check_all(self, reason: str = "check") -> list[Outcome]:
        """Judge everything now and, in enforce mode, repair what drifted."""
        if not self.dc.enabled:
            return []
        with self._lock:
            log.debug("drift check: %s", reason)
            now = self.clock()
            self._last_full = now
            for key, until in list(self._paused.items()):
                if now >= until:  # over, whether or not the drift is still there
                    del self._paused[key]
                    self._reverts.pop(key, None)
                    log.info("revert-war pause over for %s in %s: repairing again", *key)
            return self._check_sshd() + self._check_shadow()

    def handle(self, changed: contracts.FileChanged) -> list[Outcome]:
        """React to one changed file. Our own writes and unrelated files are ignored."""
        if not self.dc.enabled:
            return []
        with self._lock:
            path = changed.path
            if not self.is_relevant(path):
                return []
            if path in self._own and self._own[path] == _digest(_read_bytes(path)):
                log.debug("ignoring our own write to %s", path)
                return [Outcome("(own write)", path, "ignored")]
            self._own.pop(path, None)
            started = time.monotonic()
            queued = self.clock() - changed.time
            out = self._check_shadow() if path == str(self.dc.shadow) else self._check_sshd()
            log.debug("handled a change of %s in %.0f ms, %.0f ms after it was reported",
                      path, 1000 * (time.monotonic() - started), 1000 * queued)
            return out

    def next_wakeup(self) -> float | None:
        """When (clock time) the daemon should call check_all next: when a revert war's
        pause ends, and every RECHECK_INTERVAL in any case."""
        with self._lock:
            due = list(self._paused.values())
            if self._last_full is not None:
                due.append(self._last_full + RECHECK_INTERVAL)
            return min(due, default=None)

    # ------------------------------------------------------------------ sshd_config

    def _load_model(self) -> sshd_config.SshdConfig:
        return self._load()[0]

    def _load(self) -> tuple[sshd_config.SshdConfig, dict[str, str]]:
        model, texts = sshd_config.load_with_texts(self.dc.sshd_config, self.ssh_dir)
        self._model = model
        return model, texts

    def _check_sshd(self) -> list[Outcome]:
        main = str(self.dc.sshd_config)
        try:
            model, texts = self._load()
        except (OSError, sshd_config.ConfigSyntaxError) as exc:
            self._once("parse", str(exc), lambda: self.alerts.repair_failed(
                "parse", main, None, str(exc)))
            self._count_failure("parse")
            return [Outcome("sshd_config", main, "failed", detail=str(exc))]
        if main not in texts:
            # Mid-rename, or removed: the rename's own event brings us back here.
            self._once("parse", "missing", lambda: self.alerts.repair_failed(
                "parse", main, None, "file is missing"))
            return [Outcome("sshd_config", main, "failed", detail="file is missing")]
        # sshd's own verdict first. If it rejects the files as they are, the only change
        # made is a repair that sshd accepts (say "PermitRootLogin maybe" put back to
        # "no"); anything else stays as it is, alerted, and sshd is not restarted.
        # While sshd -T runs, the likely repair is planned and its candidate validated in
        # parallel (speculation: the result is only used if the final plan is the same),
        # which takes one sshd run off the time from drift to repaired file.
        invalid: ServiceError | None = None
        sshd_t: dict[str, str] | None = None
        with concurrent.futures.ThreadPoolExecutor(1, "drift-sshd-T") as pool:
            future = pool.submit(self.runner.effective, main)
            self._speculate(model, texts)
            try:
                sshd_t = future.result()
                self._last_sshd_t = sshd_t
                self._alerted.pop("invalid", None)
            except ServiceError as exc:
                invalid = exc
        findings = []
        for f in sshd_config.judge(model, self.policy, sshd_t):
            real = (sshd_t or {}).get(f.keyword)
            if not f.match and real is not None and sshd_config.normalise_value(
                    f.keyword, real) != sshd_config.normalise_value(f.keyword, f.actual):
                log.warning("model says %s=%s but sshd -T says %s; trusting sshd",
                            f.keyword, f.actual, real)
                f = sshd_config.Finding(f.keyword, f.expected, real, f.source, f.match)
            findings.append(f)

        outcomes: list[Outcome] = []
        todo: list[sshd_config.Finding] = []
        for f in findings:
            file = str(f.source.file) if f.source else main
            if f.compliant:
                self._standing.pop((f.item, file), None)
                self._standing.pop(("lockout", f.item, file), None)
                outcomes.append(Outcome(f.item, file, "ok", f.actual, f.expected))
                continue
            if self._new((f.item, file), f.actual):
                self._inc(self.metrics and self.metrics.drift_detected, setting=f.keyword,
                          file=file)
                self.alerts.drift(f.item, file, f.expected, f.actual)
            if not self.enforcing:
                outcomes.append(Outcome(f.item, file, "drift", f.actual, f.expected,
                                        "audit mode: not repaired"))
                continue
            if f.keyword in lockout.GUARDED_KEYWORDS and self.dc.lockout_guard:
                guard_reason = self._lockout_reason(model, f.keyword)
                if guard_reason:
                    if self._new(("lockout", f.item, file), guard_reason):
                        self.alerts.lockout_guard(guard_reason, f.item, file)
                        self._count_refused("lockout_guard")
                        if self.metrics:
                            self.metrics.lockout_guard_refusals.inc()
                    outcomes.append(Outcome(f.item, file, "refused", f.actual, f.expected,
                                            f"lockout guard: {guard_reason}"))
                    continue
            key = (f.item, file)
            paused = self._paused_outcome(key, f, file, texts.get(file))
            if paused:
                outcomes.append(paused)
                continue
            todo.append(f)
        if invalid is not None and not todo:
            exc = invalid
            self._once("invalid", _digest("".join(texts.values()).encode(
                errors="surrogateescape")), lambda: self.alerts.repair_failed(
                "validate", main, exc.argv, exc.stderr))
            self._count_failure("validate")
            outcomes.append(Outcome("sshd_config", main, "failed",
                                    detail=f"sshd rejects the current configuration: {exc}"))
        if todo:
            outcomes += self._repair_sshd(model, texts, todo)
        return outcomes

    def _repair_sshd(self, model: sshd_config.SshdConfig, texts: dict[str, str],
                     todo: list[sshd_config.Finding]) -> list[Outcome]:
        main = str(self.dc.sshd_config)
        edits = sshd_config.plan(model, todo, texts)
        by_file = sshd_config.edits_by_file(edits)
        new_texts = {f: sshd_config.apply_edits(texts[f], es) for f, es in by_file.items()}

        def failed(step: str, file: str, detail: str) -> list[Outcome]:
            self._count_failure(step)
            return [Outcome(f.item, str(f.source.file) if f.source else main, "failed",
                            f.actual, f.expected, f"{step}: {detail}") for f in todo]

        # 1. Validate the whole candidate with sshd before touching a real file.
        try:
            self._validate_cached(model, texts, new_texts)
        except ServiceError as exc:
            # Once per content: a config that stays broken is not re-alerted per event.
            self._once("candidate", _digest("".join(texts.values()).encode(
                errors="surrogateescape")), lambda: self.alerts.repair_failed(
                "validate", main, exc.argv, exc.stderr))
            return failed("validate", main, str(exc))
        except OSError as exc:
            self.alerts.repair_failed("edit", main, None, str(exc))
            return failed("edit", main, str(exc))

        # 2. Keep the drifted files and a diff, then replace atomically.
        self._keep_copies(texts, new_texts)
        written: list[str] = []
        try:
            for path, text in new_texts.items():
                data = text.encode("utf-8", errors="surrogateescape")
                if _read_bytes(path) != texts[path].encode("utf-8", errors="surrogateescape"):
                    raise OSError(f"{path} changed while being repaired")
                atomic.replace(path, data)
                self._own[path] = _digest(data)
                written.append(path)
            # 3. The real files, as sshd will read them on restart, and what sshd says
            # the repaired settings now are (globally and in each repaired Match block).
            self.runner.test(main)
            wrong = self._verify(main, todo)
            if wrong:
                raise _VerifyError(wrong)
        except (OSError, ServiceError, _VerifyError) as exc:
            self._restore(texts, written)
            step = {ServiceError: "validate", _VerifyError: "verify"}.get(type(exc),
                                                                          "replace")
            self.alerts.repair_failed(step, main, getattr(exc, "argv", None),
                                      getattr(exc, "stderr", str(exc)))
            return failed(step, main, str(exc))

        # 4. Restart sshd so the repaired values take effect.
        try:
            self.runner.restart()
        except ServiceError as exc:
            self._inc(self.metrics and self.metrics.sshd_restarts, result="failure")
            self.alerts.restart_failed(exc.argv, exc.stderr)
            self._restore(texts, written)
            try:
                self.runner.restart()  # back onto the files it ran with before
            except ServiceError as again:
                log.error("sshd restart after restoring failed too: %s", again)
            return failed("restart", main, str(exc))
        self._inc(self.metrics and self.metrics.sshd_restarts, result="success")

        out = []
        for f in todo:
            file = str(f.source.file) if f.source else main
            log.info("repaired %s in %s: %s -> %s", f.item, file, f.actual, f.expected)
            self.alerts.repaired(f.item, file, f.actual, f.expected)
            self._inc(self.metrics and self.metrics.drift_repaired, setting=f.keyword,
                      file=file)
            self._record_revert((f.item, file))
            self._standing.pop((f.item, file), None)
            out.append(Outcome(f.item, file, "repaired", f.actual, f.expected))
        return out

    def _verify(self, main: str, repaired: list[sshd_config.Finding]) -> list[str]:
        """Ask sshd (`-T`, and `-C` for a Match block) whether each repaired item now
        holds; a model that disagrees with sshd must not be trusted with a restart."""
        wrong = []
        contexts: dict[tuple[str, ...], dict[str, str] | None] = {}
        for f in repaired:
            ctx = sshd_config.match_context(f.match) if f.match else None
            if f.match and ctx is None:
                continue  # a Match (e.g. Group) a probe cannot fake: the model decides
            key = f.match if f.match else ()
            if key not in contexts:
                contexts[key] = self.runner.effective(main, ctx)
            real = contexts[key].get(f.keyword)
            if real is None or sshd_config.normalise_value(f.keyword, real) != \
                    sshd_config.normalise_value(f.keyword, f.expected):
                where = f" for {','.join(f'{k}={v}' for k, v in ctx.items())}" if ctx else ""
                wrong.append(f"sshd -T{where} says {f.keyword} {real}, not {f.expected}")
        return wrong

    def _speculate(self, model: sshd_config.SshdConfig, texts: dict[str, str]) -> None:
        """Validate the candidate that the model (with the last `sshd -T` output for
        keywords no line sets) says will be needed, and remember the verdict."""
        self._speculation = None
        if not self.enforcing:
            return
        todo = [f for f in sshd_config.judge(model, self.policy, self._last_sshd_t)
                if not f.compliant]
        if not todo:
            return
        try:
            edits = sshd_config.plan(model, todo, texts)
            new_texts = {f: sshd_config.apply_edits(texts[f], es)
                         for f, es in sshd_config.edits_by_file(edits).items()}
            key = self._candidate_key(texts, new_texts)
            try:
                self._validate_candidate(model, texts, new_texts)
                self._speculation = (key, None)
            except ServiceError as exc:
                self._speculation = (key, exc)
        except (OSError, ValueError) as exc:
            log.debug("speculative validation skipped: %s", exc)

    @staticmethod
    def _candidate_key(texts: dict[str, str], new_texts: dict[str, str]) -> str:
        h = hashlib.sha256()
        for path in sorted(texts):
            h.update(path.encode(errors="surrogateescape") + b"\0")
            h.update(new_texts.get(path, texts[path]).encode(errors="surrogateescape") + b"\0")
        return h.hexdigest()

    def _validate_cached(self, model: sshd_config.SshdConfig, texts: dict[str, str],
                         new_texts: dict[str, str]) -> None:
        spec, self._speculation = self._speculation, None
        if spec is not None and spec[0] == self._candidate_key(texts, new_texts):
            if spec[1] is not None:
                raise spec[1]
            return
        self._validate_candidate(model, texts, new_texts)

    def _validate_candidate(self, model: sshd_config.SshdConfig, texts: dict[str, str],
                            new_texts: dict[str, str]) -> None:
        """Mirror every file sshd reads into a private temp dir, Include lines pointing at
        the mirrors, and run `sshd -t -f` on the mirrored main file."""
        tmp_root = self.state_dir / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = Path(tempfile.mkdtemp(prefix="candidate-", dir=tmp_root))
        try:
            files = list(dict.fromkeys(model.files))
            mapping = {f: str(tmp / f"{i:03d}-{os.path.basename(f)}")
                       for i, f in enumerate(files)}
            for f in files:
                text = new_texts.get(f, texts[f])
                text = sshd_config.rewrite_includes(text, f, model, mapping)
                fd = os.open(mapping[f], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
                    fh.write(text)
            try:
                self.runner.test(mapping[model.main])
            except ServiceError as exc:
                # Name the real files in sshd's complaint, not our private copies.
                err = exc.stderr
                for real, copy in mapping.items():
                    err = err.replace(copy, f"{real} (candidate)")
                raise ServiceError(exc.argv, exc.returncode, err) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _restore(self, texts: dict[str, str], written: list[str]) -> None:
        for path in written:
            data = texts[path].encode("utf-8", errors="surrogateescape")
            try:
                atomic.replace(path, data)
                self._own[path] = _digest(data)
                log.warning("restored %s as it was before the failed repair", path)
            except OSError as exc:
                log.error("could not restore %s: %s", path, exc)

    def _keep_copies(self, texts: dict[str, str], new_texts: dict[str, str]) -> None:
        d = self.state_dir / "drift"
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
            for path, new in new_texts.items():
                flat = path.strip("/").replace("/", "_")
                base = d / f"{stamp}-{os.getpid()}-{flat}"
                Path(f"{base}.drifted").write_text(texts[path], encoding="utf-8",
                                                   errors="surrogateescape")
                diff = difflib.unified_diff(
                    texts[path].splitlines(keepends=True), new.splitlines(keepends=True),
                    fromfile=f"{path} (drifted)", tofile=f"{path} (repaired)")
                Path(f"{base}.diff").write_text("".join(diff), encoding="utf-8",
                                                errors="surrogateescape")
            kept = sorted(d.iterdir(), key=lambda p: p.stat().st_mtime)
            for old in kept[:-KEEP_COPIES]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not keep a copy of the drifted files in %s: %s", d, exc)

    # ------------------------------------------------------------------ lockout guard

    def _lockout_reason(self, model: sshd_config.SshdConfig, keyword: str) -> str | None:
        try:
            shadow_text = self.shadow.read()
        except OSError:
            shadow_text = ""
        return lockout.reason(model, self.policy, keyword, self.passwd, shadow_text)

    # ------------------------------------------------------------------ shadow

    def _check_shadow(self) -> list[Outcome]:
        sp = self.dc.shadow_policy
        path = str(self.dc.shadow)
        try:
            text = self.shadow.read()
        except OSError as exc:
            self._once("shadow-read", str(exc), lambda: self.alerts.repair_failed(
                "read", path, None, str(exc)))
            return [Outcome("root password", path, "failed", detail=str(exc))]
        state = shadow.judge(text)
        del text  # hashes must not outlive this function
        outcomes: list[Outcome] = []
        lock_empty = False
        empty = [a for a in state.empty_password_accounts if a != "root"]
        if empty and sp.empty_passwords != "ignore":
            self._inc(self.metrics and self.metrics.drift_detected,
                      setting="empty passwords", file=path)
            self._once("empty", tuple(empty), lambda: self.alerts.drift(
                "empty passwords", path, "none", ", ".join(empty)))
            if sp.empty_passwords == "lock" and self.enforcing:
                lock_empty = True
            else:
                outcomes.append(Outcome("empty passwords", path, "drift", ", ".join(empty),
                                        "none", "alert only"))
        root_drift = sp.lock_root and state.root_present and not state.root_locked
        if root_drift:
            if self._new(("root password", path), "unlocked"):
                self._inc(self.metrics and self.metrics.drift_detected,
                          setting="root password", file=path)
                self.alerts.drift("root password", path, "locked", "unlocked")
            if not self.enforcing:
                outcomes.append(Outcome("root password", path, "drift", "unlocked", "locked",
                                        "audit mode: not repaired"))
                root_drift = False
            else:
                paused = self._paused_outcome(("root password", path), None, path, None)
                if paused:
                    outcomes.append(paused)
                    root_drift = False
        elif sp.lock_root and state.root_present:
            self._standing.pop(("root password", path), None)
            outcomes.append(Outcome("root password", path, "ok", "locked", "locked"))
        if not root_drift and not lock_empty:
            return outcomes
        try:
            result = self.shadow.relock(sp.lock_form if root_drift else "!",
                                        lock_empty=lock_empty)
        except (OSError, shadow.ShadowFormatError) as exc:
            self._count_failure("replace")
            self.alerts.repair_failed("replace", path, None, str(exc))
            return outcomes + [Outcome("root password", path, "failed", detail=str(exc))]
        if result is not None:
            self._own[path] = _digest(result[1].encode("utf-8", errors="surrogateescape"))
        if root_drift:
            log.info("relocked root's password in %s", path)
            self.alerts.repaired("root password", path, "unlocked", "locked")
            self._inc(self.metrics and self.metrics.drift_repaired,
                      setting="root password", file=path)
            self._record_revert(("root password", path))
            self._standing.pop(("root password", path), None)
            outcomes.append(Outcome("root password", path, "repaired", "unlocked", "locked"))
        if lock_empty:
            self.alerts.repaired("empty passwords", path, ", ".join(empty), "locked")
            outcomes.append(Outcome("empty passwords", path, "repaired", ", ".join(empty),
                                    "locked"))
        return outcomes

    # ------------------------------------------------------------------ revert wars

    def _paused_outcome(self, key: tuple[str, str], f: sshd_config.Finding | None,
                        file: str, text: str | None) -> Outcome | None:
        now = self.clock()
        until = self._paused.get(key)
        if until is not None:
            if now < until:
                return Outcome(key[0], file, "paused", f.actual if f else "",
                               f.expected if f else "",
                               "revert war: repairs paused until "
                               + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until)))
            del self._paused[key]
            self._reverts.pop(key, None)
            log.info("revert-war pause over for %s in %s: repairing again", *key)
        rw = self.dc.revert_war
        recent = self._reverts.get(key)
        if recent:
            while recent and recent[0] < now - rw.window:
                recent.popleft()
        if recent and len(recent) >= rw.max_reverts:
            self._paused[key] = now + rw.pause
            if text is None:
                text = (_read_bytes(file) or b"").decode(errors="replace") \
                    if file != str(self.dc.shadow) else None
            # What the file says about its manager first; else who logged as a known
            # writer during the war.
            tools = SHADOW_WRITERS if file == str(self.dc.shadow) else CONFIG_WRITERS
            writer = writer_of(file, text) or self.writer_hint(now - rw.window, tools=tools)
            self.alerts.revert_war(key[0], file, writer or "unknown", len(recent))
            self._inc(self.metrics and self.metrics.revert_wars,
                      setting=f.keyword if f else key[0], file=file)
            self._count_refused("revert_war")
            return Outcome(key[0], file, "paused", f.actual if f else "",
                           f.expected if f else "",
                           f"revert war: undone {len(recent)} times within "
                           f"{rw.window:.0f}s by {writer or 'an unknown writer'}; "
                           f"paused for {rw.pause:.0f}s")
        return None

    def _record_revert(self, key: tuple[str, str]) -> None:
        self._reverts.setdefault(key, collections.deque()).append(self.clock())

    # ------------------------------------------------------------------ small helpers

    def _new(self, key: tuple[str, ...], state: str) -> bool:
        """True the first time `key` is seen in `state`: a drift (or refusal) that stays
        is alerted and counted once, not on every unrelated change to the same files."""
        if self._standing.get(key) == state:
            return False
        self._standing[key] = state
        return True

    def _once(self, kind: str, token: Any, fire: Callable[[], None]) -> None:
        """Alert once per distinct token, so a file that stays broken does not flood."""
        if self._alerted.get(kind) != token:
            self._alerted[kind] = token
            fire()

    def _count_failure(self, step: str) -> None:
        self._inc(self.metrics and self.metrics.repair_failures, step=step)

    def _count_refused(self, reason: str) -> None:
        self._inc(self.metrics and self.metrics.repairs_refused, reason=reason)

    @staticmethod
    def _inc(counter: Any, **labels: str) -> None:
        if counter is not None:
            (counter.labels(**labels) if labels else counter).inc()


class _VerifyError(Exception):
    def __init__(self, problems: list[str]):
        self.stderr = "; ".join(problems)
        super().__init__(self.stderr)
