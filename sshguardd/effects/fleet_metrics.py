"""The fleet stage's Prometheus metrics, registered beside the daemon's own (same
registry, same `sshguardd_` namespace). Alert rules: packaging/prometheus/."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from sshguardd.bans.fleet_veto import REASONS

NAMESPACE = "sshguardd"
OPS = ("ban", "unban")


class FleetMetrics:
    """Attributes named after the metric without its `sshguardd_fleet_` prefix."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=NAMESPACE, subsystem="fleet",
                           registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, namespace=NAMESPACE, subsystem="fleet",
                         registry=registry)
        self.connected = gauge("connected", "1 while the fleet engine answers, else 0.")
        self.events_in = counter("events_in", "Peer entries read, by op.", ("op",))
        self.events_out = counter("events_out", "Entries published to our stream, by op.",
                                  ("op",))
        self.applied = counter("bans_applied", "Peer bans that reached the kernel.")
        self.vetoed = counter("vetoed", "Peer entries refused by the local veto, by reason.",
                              ("reason",))
        self.quarantines = counter("quarantines", "Times a publisher was quarantined.")
        self.quarantined = gauge("quarantined_publishers",
                                 "Publishers whose entries are being ignored now.")
        self.lag = gauge("peer_lag_seconds", "Seconds between a peer's latest entry being "
                         "decided and it being acted on here, by peer.", ("peer",))
        self.outbox = gauge("outbox_depth", "Entries waiting to be published.")
        self.outbox_dropped = counter("outbox_dropped",
                                      "Entries dropped from a full outbox (oldest first).")
        self.resyncs = counter("resyncs", "Peer snapshots read after a gap in its stream.")
        self.duplicates = counter("duplicates", "Peer entries skipped as already applied.")
        self.reconnects = counter("reconnects", "Failed attempts to reach the engine.")
        self.remote_active = gauge("bans_remote_active",
                                   "Bans held in the kernel for the fleet.")
        for op in OPS:
            self.events_in.labels(op=op)
            self.events_out.labels(op=op)
        for reason in REASONS:
            self.vetoed.labels(reason=reason)
