"""Fleet mode in the daemon: builds the fleet stage from the config and hooks it to the
loop (its queue, timers and shutdown) and to the ban engine (which stages its bans for
our stream). `attach(daemon, store, engine)` is the loop's one call."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from sshguardd.daemon import status
from sshguardd.daemon.fleet_sync import FleetStage
from sshguardd.effects.fleet_metrics import FleetMetrics

if TYPE_CHECKING:
    from sshguardd.daemon.ban_engine import BanEngine
    from sshguardd.daemon.loop import Daemon

log = logging.getLogger(__name__)


def attach(d: Daemon, store: Any, engine: BanEngine) -> FleetStage | None:
    """The running fleet stage, or None when [fleet] is off. A fleet that cannot be set
    up (no redis client, a password file others can read) is reported and left off:
    local protection must never depend on it. store is the daemon's effects.store.Store
    (the fleet tables live in its database)."""
    from sshguardd.effects.fleet_transport import FleetUnavailable, from_config

    cfg = d.cfg
    if not cfg.fleet.enabled:
        return None
    try:
        transport = from_config(cfg.fleet)
    except FleetUnavailable as exc:
        log.error("fleet mode off: %s", exc)
        d.alerts.startup_problem("fleet", f"fleet mode not started: {exc}")
        return None
    alerts: Any = d.alerts   # effects.alerts.Alerts: it has the fleet alerts too
    # Beside the daemon's own metrics (same registry, same /metrics).
    registry = getattr(d.metrics, "registry", None) or CollectorRegistry()
    stage = FleetStage(cfg, transport.host, transport=transport, store=store,
                       firewall=d.firewall, metrics=FleetMetrics(registry), alerts=alerts,
                       clock=d.clock, status_extra=lambda: status.for_fleet(d))
    engine.fleet = stage
    stage.start(d._put)
    return stage
