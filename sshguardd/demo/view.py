"""The terminal view of `sshguardd demo`: phases, steps, live events and a progress line.

Thread-safe (the journal feed prints from its own thread). On a terminal it redraws one
progress line in place and uses colour (unless NO_COLOR is set); elsewhere (a pipe, a CI
log) it prints plain lines and a progress line only when its text changes.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import TextIO

_COLORS = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34",
           "magenta": "35", "cyan": "36"}


class View:
    """Where the demo says what happens. `check()` records each check as passed or failed
    (`passes`, `failures`), which decides the demo's result; the rest only prints."""

    def __init__(self, out: TextIO | None = None, *, live: bool | None = None,
                 color: bool | None = None) -> None:
        self.out = out or sys.stdout
        tty = self.out.isatty()
        self.live = tty if live is None else live
        self.color = (tty and "NO_COLOR" not in os.environ) if color is None else color
        self._lock = threading.Lock()
        self._progress = ""
        self._started = time.monotonic()
        self.failures: list[str] = []
        self.passes: list[str] = []

    def _c(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(_COLORS[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def _print(self, line: str) -> None:
        with self._lock:
            if self.live and self._progress:
                self.out.write("\r\x1b[K")
            self.out.write(line + "\n")
            if self.live and self._progress:
                self.out.write(self._progress)
            self.out.flush()

    def _clock(self) -> str:
        return self._c(f"{time.monotonic() - self._started:6.1f}s", "dim")

    # -- what the demo calls -----------------------------------------------------------

    def title(self, text: str) -> None:
        self._print("")
        self._print(self._c(text, "bold"))

    def phase(self, number: int, total: int, title: str, explanation: str = "") -> None:
        self.end_progress()
        self._print("")
        self._print(self._c(f"[{number}/{total}] {title}", "bold", "blue"))
        for line in explanation.strip().splitlines():
            self._print("      " + line.strip())

    def step(self, text: str) -> None:
        self._print(f"{self._clock()}  {self._c('•', 'cyan')} {text}")

    def ok(self, text: str) -> None:
        self.passes.append(text)
        self._print(f"{self._clock()}  {self._c('✓', 'green', 'bold')} {text}")

    def fail(self, text: str) -> None:
        self.failures.append(text)
        self._print(f"{self._clock()}  {self._c('✗', 'red', 'bold')} {text}")

    def check(self, passed: bool, text: str, detail: str = "") -> bool:
        if passed:
            self.ok(text)
        else:
            self.fail(f"{text}{': ' + detail if detail else ''}")
        return passed

    def event(self, label: str, text: str, style: str = "yellow") -> None:
        tag = self._c(f"{label:<9}", style, "bold")
        self._print(f"{self._clock()}  {self._c('⟶', style)} {tag} {text}")

    def detail(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines():
            self._print(self._c("          │ ", "dim") + line)

    def progress(self, text: str) -> None:
        """Replace the progress line (live), or print it when it changed (plain)."""
        with self._lock:
            if self.live:
                # One terminal row at most: a wrapped line cannot be redrawn with \r.
                width = shutil.get_terminal_size((100, 24)).columns - 1
                room = width - len(f"{0.0:6.1f}s  ⋯ ")
                if len(text) > room:
                    text = text[:max(room - 1, 0)] + "…"
                self._progress = f"{self._clock()}  {self._c('⋯', 'magenta')} {text}"
                self.out.write("\r\x1b[K" + self._progress)
                self.out.flush()
                return
            changed = text != self._progress
            self._progress = text
        if changed:
            self._print(f"{self._clock()}  ⋯ {text}")

    def end_progress(self) -> None:
        with self._lock:
            if self.live and self._progress:
                self.out.write("\r\x1b[K" + self._progress + "\n")
                self.out.flush()
            self._progress = ""

    def bar(self, done: float, total: float, width: int = 12) -> str:
        filled = 0 if total <= 0 else min(width, round(width * done / total))
        return "█" * filled + "░" * (width - filled)
