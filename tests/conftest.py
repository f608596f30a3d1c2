"""Shared fixtures: a sandbox of the host's system, and a leak check for every test.

Helpers may add fixtures here with small edits; keep each one short and documented.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshguardd.demo.sandbox import Sandbox, wait_for


def _child_pids() -> set[int]:
    """Direct children of this process (all threads), zombies included."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except FileNotFoundError:
            continue  # the thread ended while we looked
    return pids


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves child processes or threads running (watchdog's model).

    A thread or child may take a moment to finish after its owner stopped it, so this
    waits for them with a deadline instead of failing at once.
    """
    threads_before = set(threading.enumerate())
    children_before = _child_pids()
    yield

    def leaked_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]

    def leaked_children() -> set[int]:
        return _child_pids() - children_before

    try:
        wait_for(lambda: not leaked_threads() and not leaked_children(), timeout=10,
                 what="threads and child processes to end")
    except TimeoutError:
        threads = leaked_threads()
        children = {pid: _cmdline(pid) for pid in leaked_children()}
        pytest.fail(f"test leaked threads {threads!r} / child processes {children!r}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A failing test's report ends with the last lines of each daemon it ran."""
    report = yield
    import daemon_helpers  # tests/ is on sys.path; imported late, after collection
    if call.when == "teardown" or report.failed:
        if report.failed:
            for i, d in enumerate(daemon_helpers.STARTED):
                tail = d.log().splitlines()[-40:]
                report.sections.append((f"daemon {i} log (last {len(tail)} lines)",
                                        "\n".join(tail)))
        if call.when == "teardown":
            daemon_helpers.STARTED.clear()
    return report


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A started Sandbox (private mount+net+pid namespaces, /etc and /var overlays,
    private journald, /dev/log) in tmp_path; sshd is not started (call start_sshd)."""
    if os.geteuid() != 0:
        pytest.fail("the sandbox needs root (run the suite with scripts/test.sh)")
    with Sandbox(tmp_path) as sb:
        yield sb
