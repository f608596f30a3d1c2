"""The daemon's collaborators, as the small interfaces it uses them through.

`Daemon(cfg, parts)` gets every effect in one frozen `Parts`; `daemon.wiring` builds the
production ones from the config, tests build theirs from real components with temp paths
(see tests/daemon_helpers.py). Each interface names only what the daemon calls, so a
second implementation (the dry-run firewall, a file follower instead of the journal) is a
class with these methods and nothing else to know.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sshguardd import config
from sshguardd.contracts import (
    Ban,
    FileChanged,
    Kind,
    LogBatch,
    LogRecord,
    PackageState,
    WatchSet,
)

Request = dict[str, Any]   # one decoded control-socket JSON object (data, not a collaborator)
Handler = Callable[[Request], Request]


class Firewall(Protocol):
    """Where bans become dropped packets. Changes are staged, then committed together
    (one kernel transaction per batch); what a failed commit could not apply stays staged
    for the next commit, so nothing decided is ever dropped on the floor."""

    calls: int       # nft processes run (the dry run: commits it would have made)
    access_dropped: dict[str, int]   # allow-only drops by family, as of the last check()

    @property
    def name(self) -> str:
        """What the backend manages, for log lines ('inet sshguardd')."""

    @property
    def pending(self) -> int:
        """Staged changes not yet in the kernel."""

    def setup(self) -> None:
        """Create or repair the table, sets and rules (existing elements survive)."""

    def stage(self, add: Sequence[Ban] = (), remove: Sequence[str] = (), *,
              replace: bool = False) -> None:
        """Queue bans to add (replace: also reset the timeout of a live element) and
        networks to lift; the last word on a network wins."""

    def commit(self, now: float) -> None:
        """Apply everything staged; raises FirewallError, keeping what failed staged."""

    def restore(self, bans: Sequence[Ban], now: float) -> None:
        """Make the sets hold exactly `bans` (the store's active ones); clears the stage."""

    def check(self, sample: Sequence[str]) -> str | None:
        """Cheaply verify the table, its drop rules and that a few active bans from the
        store (`sample`) are in their sets: None when intact, else what is wrong (the
        caller repairs with setup + restore)."""

    def set_ports(self, ports: Sequence[int]) -> bool:
        """Protect these ports from now on (applied by the next setup); True if changed."""

    def set_access(self, sources: Sequence[str]) -> bool:
        """Allow-only mode's networks from the next setup on (() = off); True if changed.
        (A seventh verb: the mode is part of the same table and transaction.)"""


class Follower(Protocol):
    """A log source (journal or log file) read on a thread of its own."""

    cursor: str | None   # where the last delivered batch ended (a LogBatch.position)
    entries_read: int

    @property
    def alive(self) -> bool: ...

    def open(self) -> None: ...

    def backlog(self, window: float) -> list[LogRecord]:
        """Entries of the last `window` seconds before the saved position."""

    def start(self, emit: Callable[[LogBatch], None]) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def close(self) -> None: ...


class Store(Protocol):
    """The state store: bans, ban history, logins, failure counters and the position."""

    path: Path

    def batch(self) -> AbstractContextManager[Any]: ...

    def add_bans(self, bans: Iterable[Ban], *, history: bool = True) -> None: ...

    def remove_ban(self, network: str) -> bool: ...

    def active_bans(self, now: float) -> list[Ban]: ...

    def shift_bans(self, delta: float) -> None: ...

    def active_among(self, networks: Iterable[str], now: float) -> set[str]: ...

    def count_active(self, now: float) -> dict[str, int]: ...

    def history(self, since: float, limit: int | None = None) -> dict[str, list[float]]: ...

    def save_offenders(self, changes: Iterable[tuple[str, float, bytes | None]]) -> None: ...

    def offenders(self, since: float) -> list[tuple[str, bytes]] | None: ...

    def record_logins(self, logins: Iterable[tuple[str, float]
                                             | tuple[str, float, str | None]]) -> None: ...

    def login_users(self, since: float) -> dict[str, list[str]]: ...

    def logins(self, since: float) -> dict[str, float]: ...

    def position(self) -> str | None: ...

    def save_position(self, position: str) -> None: ...

    def sample_active(self, now: float) -> list[str]: ...

    def prune(self, now: float, history_since: float, logins_since: float,
              offenders_since: float | None = None) -> None: ...

    def close(self) -> None: ...


class Outcome(Protocol):
    """What the drift guard did about one policy item."""

    @property
    def item(self) -> str: ...

    @property
    def file(self) -> str: ...

    @property
    def action(self) -> str: ...


class DriftRepairer(Protocol):
    """The drift guard. Called on the loop thread only; the watcher never calls it, it
    gets a WatchSet (an immutable snapshot) from the loop instead."""

    def check_all(self, reason: str = "check") -> Sequence[Outcome]: ...

    def handle(self, changed: FileChanged) -> Sequence[Outcome]: ...

    def next_wakeup(self) -> float | None: ...

    def watch_set(self) -> WatchSet: ...

    def paused(self) -> Sequence[Any]: ...            # revert-war pauses (revert_pauses.Pause)

    def resume(self, item: str | None = None) -> Sequence[Any]: ...


class Watcher(Protocol):
    @property
    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def update(self, watch: WatchSet) -> None: ...

    def stop(self) -> None: ...


WatcherFactory = Callable[[WatchSet, Callable[[FileChanged], None], float], Watcher]


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class Labelled(Protocol):
    def labels(self, *values: str, **labels: str) -> Any: ...   # a child: inc() or set()


class Stoppable(Protocol):
    """A server on a thread of its own (the metrics endpoint)."""

    @property
    def problem(self) -> str | None:
        """Why it cannot serve (thread dead, out of descriptors), or None."""

    def stop(self, timeout: float = 5.0) -> None: ...


class Metrics(Protocol):
    """effects.metrics.Metrics as the daemon uses it (read-only members: the protocol
    must not demand prometheus' own classes)."""

    @property
    def ban_errors(self) -> Labelled: ...

    @property
    def reloads(self) -> Labelled: ...

    @property
    def bans_active(self) -> Labelled: ...

    @property
    def journal_read_errors(self) -> Counter: ...

    @property
    def bans_withheld(self) -> Counter: ...

    def ban_applied(self, networks: Iterable[str]) -> None: ...

    def unbanned(self, networks: Iterable[str]) -> None: ...

    def failure(self, kind: Kind) -> None: ...

    def journal_read(self, entry_times: Iterable[float | None], now: float) -> None: ...

    def policy_state(self, tracked: int, evictions: int) -> None: ...

    def serve(self, address: str, port: int) -> Stoppable: ...

    @property
    def access_dropped(self) -> Labelled: ...


class Alerts(Protocol):
    def ban(self, network: str, duration: float | None, strikes: int = 1,
            reason: str = "") -> None: ...

    def unban(self, network: str, reason: str = "") -> None: ...

    def lockout_guard(self, reason: str, setting: str | None = None,
                      file: str | None = None) -> None: ...

    def startup_problem(self, what: str, detail: str) -> None: ...


class Notifier(Protocol):
    def watchdog_interval(self) -> float | None: ...

    def ready(self, status: str | None = None) -> bool: ...

    def status(self, text: str) -> bool: ...

    def watchdog(self) -> bool: ...

    def reloading(self, status: str | None = None) -> bool: ...

    def stopping(self, status: str | None = None) -> bool: ...

    def close(self) -> None: ...


class ControlServer(Protocol):
    @property
    def alive(self) -> bool: ...

    @property
    def problem(self) -> str | None:
        """Why it cannot serve (thread dead, out of descriptors), or None."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Updates(Protocol):
    """The update watch: probes on its own thread, hands PackageStates to the callback
    (the loop's queue); the loop passes each back to on_state on its own thread."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def on_state(self, state: PackageState) -> None: ...

    def status(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Parts:
    """Everything the daemon talks to. Factories where the daemon makes (or remakes) the
    part itself: a follower from the saved position (after its thread died), a drift
    guard from a reloaded config, the control server around the loop's handler."""

    store: Callable[[], Store]      # opened at start; raises StoreError
    firewall: Firewall
    metrics: Metrics
    alerts: Alerts
    notifier: Notifier
    follower: Callable[[str | None], Follower]
    drift: Callable[[config.Config], DriftRepairer | None]   # None: drift guard off
    watcher: WatcherFactory
    control: Callable[[Path, Handler], ControlServer]
    ports: Callable[[], tuple[int, ...]] | None = None   # what sshd listens on now
    updates: Callable[[Callable[[PackageState], object]], Updates] | None = None
    clock: Callable[[], float] = time.time
    serve_metrics: bool = True

