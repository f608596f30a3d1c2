"""Builds the daemon's production parts from the config (`build(cfg) -> Parts`).

The one place that knows which effect class backs which interface of daemon.parts: the
journal or a log file, nft or the dry-run firewall, the drift guard and its watcher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sshguardd import config
from sshguardd.contracts import FileChanged, PackageState, WatchSet
from sshguardd.daemon import parts
from sshguardd.daemon.notify import Notifier
from sshguardd.daemon.update_watch import UpdateWatch, UpdateWatchStage
from sshguardd.effects.alerts import Alerts
from sshguardd.effects.control_socket import ControlServer
from sshguardd.effects.metrics import Metrics
from sshguardd.effects.nft_dryrun import DryRunFirewall
from sshguardd.effects.nft_runner import NftFirewall
from sshguardd.effects.packages import PackageProbe, PackageWatch
from sshguardd.effects.sshd_ports import SshdPorts
from sshguardd.effects.store import Store, StoreError
from sshguardd.effects.watcher import Watcher

log = logging.getLogger(__name__)


def follower_factory(cfg: config.Config, metrics: Metrics,
                     alerts: Alerts) -> Callable[[str | None], parts.Follower]:
    """position -> a new follower of the configured source, resuming there."""
    src = cfg.source

    def suppressed(unit: str, dropped: int) -> None:
        # Called on the follower's thread: a counter and a journal entry, no loop state.
        metrics.log_suppressed.labels(unit=unit).inc(dropped)
        alerts.log_suppressed(unit, dropped)

    def make(position: str | None) -> parts.Follower:
        if src.backend == "file":
            from sshguardd.effects.logfile import FileFollower

            return FileFollower(src.files, position=position)
        from sshguardd.effects.journal import JournalFollower

        return JournalFollower(src.units, src.commands, directory=src.journal_directory,
                               cursor=position, on_suppressed=suppressed)
    return make


def watcher(watch: WatchSet, callback: Callable[[FileChanged], None],
            debounce: float) -> parts.Watcher:
    """The drift watcher: its thread filters with the WatchSet snapshot, never with
    the guard."""
    return Watcher(watch, callback, debounce=debounce)


def drift_factory(metrics: Metrics,
                  alerts: Alerts) -> Callable[[config.Config], parts.DriftRepairer | None]:
    def make(cfg: config.Config) -> parts.DriftRepairer | None:
        if not cfg.drift.enabled:
            return None
        from sshguardd.daemon.drift_guard import DriftGuard

        return DriftGuard(cfg, alerts=alerts, metrics=metrics)
    return make


def open_store(cfg: config.Config) -> Store:
    """Raises StoreError naming the file (or directory) and the reason."""
    try:
        cfg.daemon.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StoreError(f"cannot create the state directory {cfg.daemon.state_dir}: "
                         f"{exc.strerror or exc}") from exc
    return Store(cfg.daemon.state_dir / "state.db")


def build(cfg: config.Config, *, dry_run: bool = False) -> parts.Parts:
    """The production parts (the store is opened when the daemon starts)."""
    metrics = Metrics()
    alerts = Alerts()
    ports = SshdPorts(cfg.drift.sshd)
    fixed = tuple(cfg.firewall.ports)
    initial = fixed or ports()
    firewall: parts.Firewall
    if dry_run:
        firewall = DryRunFirewall(cfg.firewall.table, initial, family=cfg.firewall.family,
                                  ipv4_prefix=cfg.ban.ipv4_prefix,
                                  ipv6_prefix=cfg.ban.ipv6_prefix)
    else:
        firewall = NftFirewall(table=cfg.firewall.table, ports=initial,
                               nft=str(cfg.firewall.nft), ipv4_prefix=cfg.ban.ipv4_prefix,
                               ipv6_prefix=cfg.ban.ipv6_prefix, family=cfg.firewall.family)
    log.info("protecting ssh port(s) %s%s", ", ".join(map(str, initial)),
             "" if fixed else " (where sshd listens)")
    return parts.Parts(
        store=lambda: open_store(cfg),
        firewall=firewall,
        metrics=metrics,
        alerts=alerts,
        notifier=Notifier(),
        follower=follower_factory(cfg, metrics, alerts),
        drift=drift_factory(metrics, alerts),
        watcher=watcher,
        control=lambda path, handler: ControlServer(path, handler),
        # Ports given in the config are the admin's word; otherwise follow sshd.
        ports=None if fixed else ports,
        updates=update_watch(cfg, metrics, alerts),
    )


def update_watch(cfg: config.Config, metrics: Metrics, alerts: Alerts,
                 ) -> Callable[[Callable[[PackageState], object]], parts.Updates] | None:
    up = cfg.updates
    if not up.enabled:
        return None

    def make(callback: Callable[[PackageState], object]) -> parts.Updates:
        probe = PackageProbe(up.package, up.backend, dnf_releasever=up.dnf_releasever,
                             refresh=up.refresh)
        watch = PackageWatch(probe, callback, interval=up.interval,
                             refresh_interval=up.refresh_interval if up.refresh else None)
        return UpdateWatch(UpdateWatchStage(metrics, alerts), watch)
    return make
