"""Revert-war pauses that explain themselves and survive a restart.

sshguardd.drift.revert_war does the counting. This adds what a person needs when repairs of
a setting stop: what is paused, since and until when, who was writing it, and how to
resume (`sshguardd resume [SETTING]`). The pauses are kept in
state_dir/revert-wars.json, so `systemctl reload` (which may rebuild the drift guard) and
`systemctl restart` (a new process) both keep them: before, a reload kept a pause and a
restart silently ended it. Called on the daemon loop only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sshguardd.drift.revert_war import Key, RevertWars, Verdict
from sshguardd.effects import files

log = logging.getLogger(__name__)

FILE_NAME = "revert-wars.json"
MAX_BYTES = 1 << 20


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


@dataclass(frozen=True, slots=True)
class Pause:
    item: str           # e.g. "permitrootlogin", "root password"
    file: str
    since: float
    until: float
    writer: str         # who kept undoing the repair ("unknown" when it cannot be told)
    count: int          # repairs undone within the window

    def resume_hint(self) -> str:
        return f"sshguardd resume {_quote(self.item)}"

    def explain(self) -> str:
        """One line: what, who, until when, how to resume."""
        return (f"repairs of {self.item} in {self.file} paused until {utc(self.until)}: "
                f"undone {self.count} times by {self.writer}; stop that writer, then "
                f"`{self.resume_hint()}` (or wait)")


def _quote(item: str) -> str:
    return f"'{item}'" if " " in item else item


class Pauses:
    """RevertWars (same verdict/record/expire/next_wakeup) plus the story of each pause,
    loaded from and saved to `state_dir`/revert-wars.json."""

    def __init__(self, wars: RevertWars, state_dir: Path):
        self.wars = wars
        self.path = Path(state_dir) / FILE_NAME
        self.info: dict[Key, Pause] = {}
        # False while the guard makes its own start-up or reload repairs: not counted.
        self.counting = True
        self._load()

    # -- the RevertWars seam
    def verdict(self, key: Key, now: float) -> Verdict | None:
        return self.wars.verdict(key, now)

    def record(self, key: Key, now: float) -> None:
        if self.counting:
            self.wars.record(key, now)

    def next_wakeup(self) -> float | None:
        return self.wars.next_wakeup()

    def expire(self, now: float) -> list[Key]:
        over = self.wars.expire(now)
        if over:
            for k in over:
                self.info.pop(k, None)
            self._save()
        return over

    # -- the story
    def started(self, key: Key, verdict: Verdict, now: float, writer: str) -> Pause:
        p = Pause(key[0], key[1], now, verdict.until, writer, verdict.count)
        self.info[key] = p
        self._save()
        return p

    def explain(self, key: Key, until: float) -> str:
        story = self.info.get(key)
        return story.explain() if story else f"repairs paused until {utc(until)}"

    def current(self, now: float) -> list[Pause]:
        return sorted((p for k, p in self.info.items()
                       if self.wars.paused().get(k, 0) > now), key=lambda p: p.until)

    def resume(self, item: str | None) -> list[Pause]:
        """End the pauses of `item` (a setting name, case-insensitive, or the full item;
        every pause when None). Returns those ended."""
        want = None if item is None else item.strip().lower()
        keys = [k for k in self.wars.paused() if want is None or k[0].lower() == want
                or k[0].split(" (", 1)[0].lower() == want]
        ended = self.wars.resume(keys)
        out = [self.info.pop(k) for k in ended if k in self.info]
        log.info("revert-war pauses ended by `sshguardd resume`: %s",
                 ", ".join(f"{p.item} in {p.file}" for p in out) or "none")
        if ended:
            self._save()
        return out

    # -- on disk
    def _load(self) -> None:
        try:
            data = json.loads(files.read_untrusted(self.path, max_bytes=MAX_BYTES))
            for d in data:
                p = Pause(str(d["item"]), str(d["file"]), float(d["since"]),
                          float(d["until"]), str(d["writer"]), int(d["count"]))
                self.info[(p.item, p.file)] = p
                self.wars.restore((p.item, p.file), p.until)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the revert-war pauses in %s: %s", self.path, exc)
            return
        for p in self.info.values():
            log.warning("kept from before: %s", p.explain())

    def _save(self) -> None:
        data = json.dumps([asdict(p) for p in self.info.values()], indent=1).encode()
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("could not keep the revert-war pauses in %s: %s (a restart "
                        "would end them)", self.path, exc)
