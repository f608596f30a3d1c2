"""What the daemon's queue carries besides the stage messages, and its start-up errors."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sshguardd.contracts import FileChanged, LogBatch, PackageState


class StartupError(Exception):
    """The daemon cannot start (firewall, journal or control socket unavailable). Its
    str() is the one line to print; the CLI maps the class to an exit code."""


class StateStoreError(StartupError):
    """The state store (state.db or its directory) is damaged or unusable."""


@dataclass
class Reply:
    """A slot a control request waits on until the loop has answered it."""

    event: threading.Event = field(default_factory=threading.Event)
    value: dict[str, Any] | None = None

    def set(self, value: dict[str, Any]) -> None:
        self.value = value
        self.event.set()


@dataclass(frozen=True)
class ControlRequest:
    request: dict[str, Any]
    reply: Reply


# Fleet mode's messages (contracts.Fleet*, daemon/fleet_sync.FLEET_MESSAGES) travel in the
# queue too; the loop hands them to the fleet stage before anything is taken for a request.
QueueItem = LogBatch | FileChanged | PackageState | ControlRequest

__all__ = ["ControlRequest", "QueueItem", "Reply", "StartupError", "StateStoreError"]
