"""The demo's terminal view: plain output for logs, one redrawn row on a terminal."""

from __future__ import annotations

import io

import pytest

from sshguardd.demo.view import View


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_output_prints_progress_only_when_it_changes() -> None:
    out = io.StringIO()
    view = View(out)
    assert not view.live and not view.color
    for text in ("1 try", "1 try", "2 tries"):
        view.progress(text)
    view.event("ban", "banned 192.0.2.10/32")
    text = out.getvalue()
    assert text.count("1 try") == 1 and "2 tries" in text
    assert "\x1b" not in text and "\r" not in text
    assert text.splitlines()[-1].endswith("ban       banned 192.0.2.10/32")


def test_live_progress_fits_one_row_and_survives_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    out = Terminal()
    view = View(out, color=False)
    view.progress("x" * 200)
    view.event("ban", "banned")
    view.end_progress()
    rows = [r.rsplit("\r\x1b[K", 1)[-1] for r in out.getvalue().split("\n") if r]
    assert all(len(r) <= 59 for r in rows), rows
    assert rows[0].endswith("ban       banned")
    assert rows[1].endswith("…")


def test_checks_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    view = View(Terminal())
    assert not view.color
    assert view.check(True, "good") and not view.check(False, "bad", "why")
    assert view.passes == ["good"] and view.failures == ["bad: why"]
