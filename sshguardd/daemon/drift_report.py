"""What the drift guard tells: outcomes, and alerts and metrics sent once per standing
state (a drift that stays is alerted once, not on every unrelated change)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["ok", "drift", "repaired", "refused", "failed", "paused", "ignored"]


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


class Report:
    """alerts and metrics are anything with the methods/attributes of alerts.Alerts and
    metrics.Metrics (metrics may be None)."""

    def __init__(self, alerts: Any, metrics: Any = None):
        self.alerts = alerts
        self.metrics = metrics
        self.alerted: dict[str, object] = {}          # de-duplicates repeating alerts
        self.standing: dict[tuple[str, ...], str] = {}  # drifts alerted, still present

    def refuse(self, item: str, file: str, old: str, new: str, reason: str,
               action: Action = "refused", kind: str = "unplannable") -> list[Outcome]:
        """A repair deliberately not made: alerted (repair_refused) once while it stands,
        counted by kind (audit_mode, unreadable_line, sshd_only, unplannable)."""
        if self.new(("refused", item, file), reason):
            self.alerts.repair_refused(item, file, reason)
            self.count("repairs_refused", reason=kind)
        return [Outcome(item, file, action, old, new, reason)]

    def new(self, key: tuple[str, ...], state: str) -> bool:
        """True the first time `key` is seen in `state`: a drift (or refusal) that stays
        is alerted and counted once, not on every unrelated change to the same files."""
        if self.standing.get(key) == state:
            return False
        self.standing[key] = state
        return True

    def once(self, kind: str, token: object, alert: str, *args: Any) -> None:
        """Send `alert` once per distinct token, so a file that stays broken does not
        flood."""
        if self.alerted.get(kind) != token:
            self.alerted[kind] = token
            getattr(self.alerts, alert)(*args)

    def count(self, name: str, **labels: str) -> None:
        counter = getattr(self.metrics, name, None) if self.metrics is not None else None
        if counter is not None:
            (counter.labels(**labels) if labels else counter).inc()
