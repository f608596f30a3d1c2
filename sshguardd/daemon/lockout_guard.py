"""The lockout guard, composed: before a repair that can change who gets in, ask sshd
about every candidate account with the candidate configuration and refuse the repair when
nobody could log in afterwards.

Walk: the candidate tree (the repaired texts, Include lines pointing at private copies, as
the drift guard validates them) -> for each account likeliest to be an admin first:
`sshd -T -C user=U,...` on the candidate -> that answer's AuthorizedKeysFile read safely
(sshguardd.effects.accounts) -> sshguardd.drift.lockout judges -> stop at the first way in.
Only when none is found is the same asked of the configuration as it is now, to tell "this
repair removes the last way in" from "nothing we can see lets anyone in anyway".

Ways in that do not go through sshd at all count too (`host_ways`): AWS Systems Manager
Session Manager, when its agent is installed and registered (sshguardd.effects.ec2_access;
`[ec2] session_manager`). EC2 Instance Connect is an AuthorizedKeysCommand, so sshd's own
answer shows it, from sshd_config or from sshd's command line alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sshguardd import config as config_mod
from sshguardd.drift import lockout, sshd_edits
from sshguardd.drift import sshd_model as sshd_config
from sshguardd.drift.sshd_judge import PROBE_DEFAULTS, Finding
from sshguardd.effects import ec2_access
from sshguardd.effects.accounts import AccountSource
from sshguardd.effects.sshd import ServiceError

log = logging.getLogger(__name__)

BUDGET = 10.0      # seconds for one verdict (sshd runs ~15-40 ms per account)
MAX_PROBES = 64    # accounts asked about per verdict


@dataclass(frozen=True, slots=True)
class Verdict:
    accesses: tuple[lockout.Access, ...]
    complete: bool          # every candidate account was judged (or a way in was found)
    host_ways: tuple[str, ...] = ()   # ways in that bypass sshd (Session Manager)

    @property
    def ways(self) -> list[str]:
        return [f"{a.account}: {w}" for a in self.accesses for w in a.ways] + [
            f"host: {w}" for w in self.host_ways]


def ec2_ways(cfg: config_mod.Config) -> Callable[[], tuple[str, ...]]:
    """The host-level ways in the configuration lets the guard count (`[ec2]`)."""
    if not cfg.ec2.session_manager:
        return tuple
    probe = ec2_access.SessionManager()
    return lambda: tuple(w for w in (probe.evidence(),) if w)


@contextlib.contextmanager
def candidate_tree(model: sshd_config.SshdConfig, texts: Mapping[str, str],
                   new_texts: Mapping[str, str], tmp_root: Path) -> Iterator[str]:
    """A private copy of every file sshd reads, with new_texts applied; yields the path of
    the main file's copy. Removed afterwards."""
    tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix="lockout-", dir=tmp_root))
    try:
        files = list(dict.fromkeys(model.files))
        mapping = {f: str(tmp / f"{i:03d}-{os.path.basename(f)}") for i, f in enumerate(files)}
        for f in files:
            text = sshd_edits.rewrite_includes(new_texts.get(f, texts[f]), f, model, mapping)
            fd = os.open(mapping[f], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
                fh.write(text)
        yield mapping[model.main]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class LockoutGuard:
    """`refusal(...)` for the drift guard, `verdict(config)` for `sshguardd check`."""

    def __init__(self, accounts: AccountSource, *, tmp_root: Path, lock_root: bool,
                 clock: Callable[[], float] = time.time, budget: float = BUDGET,
                 shadow: Callable[[], str] | None = None,
                 host_ways: Callable[[], tuple[str, ...]] = tuple):
        self.accounts = accounts
        self.shadow = shadow
        self.host_ways = host_ways
        self.tmp_root = Path(tmp_root)
        self.lock_root = lock_root
        self.clock = clock
        self.budget = budget

    def verdict(self, config: str, shadow_text: str, *, stop_at_first: bool = True) -> Verdict:
        """What sshd would give each account with this configuration file."""
        now = self.clock()
        deadline = time.monotonic() + self.budget
        todo = lockout.probe_order(self.accounts.accounts(
            shadow_text, today=int(now // 86400), lock_root=self.lock_root))
        host = getattr(self.accounts, "host", PROBE_DEFAULTS["host"])
        addr = getattr(self.accounts, "addr", PROBE_DEFAULTS["addr"])
        out: list[lockout.Access] = []
        for i, acc in enumerate(todo):
            if i >= MAX_PROBES or time.monotonic() > deadline:
                log.warning("lockout guard: judged %d of %d accounts within its budget",
                            i, len(todo))
                return Verdict(tuple(out), False)
            try:
                eff = self.accounts.ask(config, acc)
            except ServiceError as exc:
                out.append(lockout.Access(acc.name, (), f"sshd -T failed: {exc.stderr}"))
                continue
            files = self.accounts.key_files(acc, lockout.key_file_paths(eff, acc)) \
                if eff.get("pubkeyauthentication", "no").lower() == "yes" else []
            a = lockout.access(acc, eff, files, host=host, addr=addr, now=now)
            out.append(a)
            if a.ways and stop_at_first:
                break
        return Verdict(tuple(out), True, self.host_ways())

    def judge(self, model: sshd_config.SshdConfig, texts: Mapping[str, str],
              findings: Sequence[Finding]) -> str | None:
        """refusal_for() with /etc/shadow read through the constructor's `shadow`."""
        try:
            shadow_text = self.shadow() if self.shadow is not None else ""
        except OSError:
            shadow_text = ""
        return self.refusal_for(model, texts, findings, shadow_text)

    def refusal_for(self, model: sshd_config.SshdConfig, texts: Mapping[str, str],
                    findings: Sequence[Finding], shadow_text: str) -> str | None:
        """refusal() for the repair of findings[-1] made together with the ones before it
        (the guarded repairs already let through), planned as the repair would be."""
        try:
            planned = sshd_edits.plan(model, findings, dict(texts))
            new_texts = {p: sshd_edits.apply_edits(texts[p], es)
                         for p, es in sshd_edits.edits_by_file(planned).items()}
        except ValueError as exc:
            return f"cannot plan the repair to judge it: {exc}"
        return self.refusal(model, texts, new_texts, findings[-1].keyword, shadow_text)

    def refusal(self, model: sshd_config.SshdConfig, texts: Mapping[str, str],
                new_texts: Mapping[str, str], keyword: str, shadow_text: str) -> str | None:
        """Why the repair that turns `texts` into `new_texts` (for `keyword`) must not be
        made, or None. An error while asking counts as a refusal: a repair that cannot be
        judged is not made."""
        started = time.monotonic()
        try:
            with candidate_tree(model, texts, new_texts, self.tmp_root) as cand:
                after = self.verdict(cand, shadow_text)
            before = None
            if not any(a.ways for a in after.accesses):
                before = self.verdict(model.main, shadow_text).accesses
        except OSError as exc:
            return f"cannot judge who could still log in: {exc}"
        finally:
            log.debug("lockout guard judged %s in %.0f ms", keyword,
                      1000 * (time.monotonic() - started))
        verdict = lockout.reason(keyword, after.accesses, before, after.complete)
        if verdict is not None and after.host_ways:
            log.warning("lockout guard: after repairing %s nobody could log in over SSH; "
                        "letting it through because of %s", keyword,
                        "; ".join(after.host_ways))
            return None
        return verdict
