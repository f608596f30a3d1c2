"""One repair of sshd's configuration, as a transaction that completes or is rolled back.

  plan the smallest edits (sshguardd.drift.sshd_edits) -> write the candidate tree to a
  private temp dir (Include lines pointing at the copies) -> `sshd -t` on the candidate ->
  keep a copy of each drifted file and a unified diff in state_dir/drift -> replace each
  file only if it still holds what was planned from (compare-and-swap,
  sshguardd.effects.swap) -> `sshd -t` on the real files -> ask `sshd -T` (and `-T -C`
  for each repaired Match block) whether the policy now holds -> restart sshd.

Any failure after the first file was replaced, *including an exception nobody expected*,
writes back the files as they were and, if sshd was already restarted, restarts it onto
them: sshd never runs a configuration we report as fixed unless it was verified. A
Conflict (someone edited a file while we worked) restores what we wrote and asks the
caller to judge again from the new text.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sshguardd.drift import sshd_edits, sshd_judge
from sshguardd.drift.sshd_judge import Finding
from sshguardd.drift.sshd_model import SshdConfig
from sshguardd.effects import swap
from sshguardd.effects.sshd import ServiceError, Sshd

log = logging.getLogger(__name__)

KEEP_COPIES = 200  # drifted-file copies and diffs kept in state_dir/drift


def digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


@dataclass
class Result:
    """ok, or the step that failed ("plan", "validate", "replace", "verify", "restart",
    "conflict", "internal") with sshd's argv/stderr when it was sshd that failed."""

    ok: bool
    step: str = ""
    detail: str = ""
    argv: list[str] | None = None
    written: dict[str, str | None] = field(default_factory=dict)  # path -> our digest


class StepFailed(Exception):
    def __init__(self, step: str, detail: str, argv: list[str] | None = None):
        self.step, self.detail, self.argv = step, detail, argv
        super().__init__(f"{step}: {detail}")


class SshdRepair:
    """Runs repairs with `runner` (sshd -t/-T and the restart command); drifted copies go
    to state_dir/drift and candidate trees to state_dir/tmp. before_swap is passed to
    the compare-and-swap replace (tests put a concurrent edit there)."""

    def __init__(self, runner: Sshd, state_dir: Path, *,
                 clock: Callable[[], float] = time.time,
                 before_swap: Callable[[], None] | None = None):
        self.runner = runner
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.before_swap = before_swap

    def ask(self, main: str, contexts: Sequence[Mapping[str, str]]) -> tuple[
            dict[str, str] | None, dict[str, dict[str, str]], ServiceError | None]:
        """sshd's own answers, in parallel: `sshd -T` (None and the error when sshd
        rejects the files) and `sshd -T -C` for each context, by context spec. The pool
        threads only run subprocesses."""
        with concurrent.futures.ThreadPoolExecutor(1 + len(contexts), "drift-sshd-T") as pool:
            glob = pool.submit(self.runner.effective, main)
            probes = [(sshd_judge.context_spec(c), pool.submit(self.runner.effective, main, c))
                      for c in contexts]
            try:
                sshd_t = glob.result()
            except ServiceError as exc:
                for _, fut in probes:
                    fut.exception()
                return None, {}, exc
            answers = {}
            for spec, fut in probes:
                try:
                    answers[spec] = fut.result()
                except ServiceError as exc:
                    log.warning("sshd -T -C %s failed: %s", spec, exc)
        return sshd_t, answers, None

    def repair(self, model: SshdConfig, texts: dict[str, str],
               todo: list[Finding]) -> Result:
        """Make every finding in `todo` hold, or change nothing (see the module doc)."""
        written: list[str] = []
        own: dict[str, str | None] = {}
        new_texts: dict[str, str] = {}
        restarted = False
        try:
            try:
                edits = sshd_edits.plan(model, todo, texts, stamp=time.strftime(
                    "%Y-%m-%d", time.gmtime(self.clock())))
                new_texts = {f: sshd_edits.apply_edits(texts[f], es)
                             for f, es in sshd_edits.edits_by_file(edits).items()}
            except ValueError as exc:  # Unplannable, StaleEdit
                raise StepFailed("plan", str(exc)) from None
            self._validate_candidate(model, texts, new_texts)
            self._keep_copies(texts, new_texts)
            for path, text in new_texts.items():
                try:
                    swap.replace_if_unchanged(path, _bytes(texts[path]), _bytes(text),
                                              before_swap=self.before_swap)
                except swap.Conflict as exc:
                    raise StepFailed("conflict", str(exc)) from None
                except OSError as exc:
                    raise StepFailed("replace", str(exc)) from None
                own[path] = digest(_bytes(text))
                written.append(path)
            main = model.main
            self._sshd("validate", self.runner.test, main)
            wrong = self._verify(main, todo)
            if wrong:
                raise StepFailed("verify", "; ".join(wrong))
            restarted = True
            self._sshd("restart", self.runner.restart)
            return Result(True, written=own)
        except Exception as exc:
            # Everything, not just the failures we thought of: a repair that raised
            # half-way must not leave changed files behind (or sshd running them).
            if isinstance(exc, StepFailed):
                step, detail, argv = exc.step, exc.detail, exc.argv
            else:
                log.exception("sshd_config repair raised; rolling back")
                step, detail, argv = "internal", f"{type(exc).__name__}: {exc}", None
            restored = self._restore(texts, new_texts, written)
            if restarted and written:
                try:
                    self.runner.restart()  # back onto the files it ran with before
                except Exception:  # rolling back: report and go on, whatever it was
                    log.exception("sshd restart after restoring failed too")
            return Result(False, step, detail, argv, written=restored)

    def _sshd(self, step: str, fn: Callable[..., object], *args: str) -> None:
        try:
            fn(*args)
        except ServiceError as exc:
            raise StepFailed(step, exc.stderr or str(exc), exc.argv) from None

    def _verify(self, main: str, repaired: list[Finding]) -> list[str]:
        """Ask sshd (`-T`, and `-C` for a Match block) whether each repaired item now
        holds; a model that disagrees with sshd must not be trusted with a restart."""
        wrong = []
        contexts: dict[tuple[str, ...], dict[str, str]] = {}
        for f in repaired:
            ctx = sshd_judge.match_context(f.match) if f.match else None
            if f.match and ctx is None:
                continue  # a Match (e.g. Group) a probe cannot fake: the model decides
            key = f.match if f.match else ()
            if key not in contexts:
                try:
                    contexts[key] = self.runner.effective(main, ctx)
                except ServiceError as exc:
                    raise StepFailed("verify", exc.stderr or str(exc), exc.argv) from None
            real = contexts[key].get(f.keyword)
            if not f.holds(real):  # the policy value, or the profile's bound
                where = f" -C {sshd_judge.context_spec(ctx)}" if ctx else ""
                wrong.append(f"sshd -T{where} says {f.keyword} {real}, not {f.expected}")
        return wrong

    def _validate_candidate(self, model: SshdConfig, texts: dict[str, str],
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
                text = sshd_edits.rewrite_includes(new_texts.get(f, texts[f]), f, model,
                                                   mapping)
                fd = os.open(mapping[f], os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(_bytes(text))
            try:
                self.runner.test(mapping[model.main])
            except ServiceError as exc:
                # Name the real files in sshd's complaint, not our private copies.
                err = exc.stderr
                for real, copy in mapping.items():
                    err = err.replace(copy, f"{real} (candidate)")
                raise StepFailed("validate", err, exc.argv) from None
        except OSError as exc:
            raise StepFailed("edit", str(exc)) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _restore(self, texts: dict[str, str], new_texts: dict[str, str],
                 written: list[str]) -> dict[str, str | None]:
        """Put back what each written file held, unless someone changed it after our
        write (theirs is kept); returns the digests of what we put back."""
        own: dict[str, str | None] = {}
        for path in written:
            data = _bytes(texts[path])
            try:
                swap.replace_if_unchanged(path, _bytes(new_texts[path]), data)
                own[path] = digest(data)
                log.warning("restored %s as it was before the failed repair", path)
            except swap.Conflict:
                log.warning("not restoring %s: it changed again after our write", path)
            except OSError as exc:
                log.error("could not restore %s: %s", path, exc)
        return own

    def _keep_copies(self, texts: dict[str, str], new_texts: dict[str, str]) -> None:
        d = self.state_dir / "drift"
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
            for path, new in new_texts.items():
                flat = path.strip("/").replace("/", "_")
                base = d / f"{stamp}-{os.getpid()}-{flat}"
                Path(f"{base}.drifted").write_bytes(_bytes(texts[path]))
                diff = difflib.unified_diff(
                    texts[path].splitlines(keepends=True), new.splitlines(keepends=True),
                    fromfile=f"{path} (drifted)", tofile=f"{path} (repaired)")
                Path(f"{base}.diff").write_bytes(_bytes("".join(diff)))
            kept = sorted(d.iterdir(), key=lambda p: p.stat().st_mtime)
            for old in kept[:-KEEP_COPIES]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not keep a copy of the drifted files in %s: %s", d, exc)
