"""What the daemon says about itself: health (what WATCHDOG=1 vouches for), the one-line
STATUS= summary and the fields of the `status` control command. Reads the loop's state,
changes none of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sshguardd import config

if TYPE_CHECKING:
    from sshguardd.daemon.loop import Daemon

# Consecutive failed firewall calls after which the daemon no longer vouches for itself:
# with the 1, 2, 4 .. s backoff that is about a minute of failing.
FIREWALL_FAILURES_UNHEALTHY = 6


def health_problems(d: Daemon) -> list[str]:
    """Why the daemon cannot do its job now (empty: healthy): a producer thread is dead
    (log follower, control server, drift watcher), a server is out of descriptors, or
    the firewall keeps failing."""
    problems = []
    if d.follower is not None and not d.follower.alive:
        problems.append("log follower dead")
    if d.control is not None and not d.control.alive:
        problems.append("control server dead")
    # The servers' own verdict: thread dead, or accept() out of descriptors.
    for server in (d.control, d.metrics_server):
        problem = server.problem if server is not None else None
        if problem:
            problems.append(problem)
    if d.drift is not None and d.drift.watcher_dead:
        problems.append("drift watcher dead")
    if d.engine is not None and d.engine.firewall_errors >= FIREWALL_FAILURES_UNHEALTHY:
        problems.append(f"firewall failing ({d.engine.firewall_errors} in a row)")
    return problems


def last_drift(d: Daemon) -> str:
    return d.drift.last_drift if d.drift is not None else "none"


def summary(d: Daemon) -> str:
    """The STATUS= line."""
    engine = d.engine
    active = engine.active_total if engine is not None else 0
    tracked = engine.policy.tracked if engine is not None else 0
    text = f"{active} bans active, {tracked} offenders tracked, last drift: {last_drift(d)}"
    if d.firewall.pending:
        text += f", {d.firewall.pending} firewall changes pending"
    return text


def for_fleet(d: Daemon) -> dict[str, Any]:
    """What the fleet status record carries besides the fleet stage's own counts."""
    drift = d.drift
    return {"drift_mode": d.cfg.drift.mode if d.cfg.drift.enabled else "off",
            "last_drift": last_drift(d), "healthy": not health_problems(d),
            # None: the drift guard is off, so this host does not judge its policy
            "compliant": drift.compliant if drift is not None else None,
            "last_repair": drift.last_repair if drift is not None else None}


def fields(d: Daemon) -> dict[str, Any]:
    """The `status` command's answer (beside ok, version and pid)."""
    engine = d._engine()
    follower = d.follower
    problems = health_problems(d)
    return {
        "uptime": round(d.clock() - d.started_at, 3),
        "healthy": not problems,
        "health_problems": problems,
        "source": d.cfg.source.backend,
        "position": follower.cursor if follower is not None else None,
        "entries_read": follower.entries_read if follower is not None else 0,
        "batches": engine.batches,
        "bans_active": engine.active_total,
        "bans_by_family": dict(engine.active),
        "offenders_tracked": engine.policy.tracked,
        "offender_evictions": engine.policy.evictions,
        # sshd connections whose lines the correlator holds (bounded)
        "connections_tracked": len(engine.correlator),
        "firewall": d.firewall.name,
        "firewall_calls": d.firewall.calls,
        "firewall_errors": engine.firewall_errors_total,
        "firewall_pending": d.firewall.pending,
        "bans_unsaved": len(engine.unsaved),
        "loop_errors": d.loop_errors + engine.loop_errors +
        (d.drift.errors if d.drift is not None else 0),
        "last_drift": last_drift(d),
        "last_drift_at": d.drift.last_drift_at if d.drift is not None else None,
        "drift_mode": d.cfg.drift.mode if d.cfg.drift.enabled else "off",
        # The config in force: when it was read (start or the last applied reload) and
        # the ban rules it set, so an admin sees at once whether a reload took.
        "config": {"path": str(d.config_path or config.DEFAULT_PATH),
                   "loaded_at": d.config_loaded_at,
                   "ban": {"enabled": d.cfg.ban.enabled, "max_retry": d.cfg.ban.max_retry,
                           "find_time": d.cfg.ban.find_time,
                           "ban_time": d.cfg.ban.ban_time}},
        "fleet": d.fleet.status() if d.fleet is not None else None,
        **d.host.status(),
        "repairs_paused": [
            {"item": p.item, "file": p.file, "since": p.since, "until": p.until,
             "writer": p.writer, "count": p.count, "resume": p.resume_hint()}
            for p in (d.drift.guard.paused() if d.drift is not None else [])],
    }
