"""Reload's config half: re-read the file and apply what may change without a restart.

One code path for both ways in: SIGHUP (a flag the loop looks at) and the `reload` control
command (`sshguardd reload`, the unit's ExecReload=), which waits for what this returns.
Called by `Daemon.reload` on the loop thread, after the firewall resync. An invalid file
is refused as a whole, naming each key and why, and the running config is kept; new
`[ban]` rules rebuild the counters from the journal window, new `[drift]` settings restart
the guard, `[access]` goes through the lockout guard (which may hold it back); the sections
in RESTART_ONLY wait for a restart and the answer says so.
"""

from __future__ import annotations

import logging
import queue
import re
from typing import TYPE_CHECKING, Any

from sshguardd import config
from sshguardd.effects import config_file

if TYPE_CHECKING:
    from sshguardd.daemon.loop import Daemon

log = logging.getLogger(__name__)

Outcome = dict[str, Any]   # the `reload` command's answer (JSON-able)

# Built once at start and not rebuilt by a reload: the firewall's table and nft binary,
# the log source, the control socket, the metrics server, the state and runtime
# directories, the update watch and the fleet stage.
RESTART_ONLY = ("firewall", "source", "control", "metrics", "daemon", "updates", "fleet")
# What the drift guard is not built from: any other section ([drift], [ec2]'s Session
# Manager, a key added later) changed means a new guard.
NOT_DRIFT = frozenset({"ban", "access", *RESTART_ONLY})


def reload_config(d: Daemon) -> Outcome:
    """Apply the config file to the running daemon. The answer is either
    {"ok": True, "result": "applied", "changed": [...], "held_back": [...]} or
    {"ok": False, "result": "refused", "problems": [{"key", "reason"}], "error": ...}."""
    path = str(d.config_path or config.DEFAULT_PATH)
    try:
        new = config_file.load(d.config_path)
    except config.ConfigError as exc:
        for line in exc.lines():
            log.error("reload refused: %s", line)
        log.error("reload refused: keeping the running config")
        d.alerts.startup_problem("reload", "; ".join(exc.lines()))
        d.metrics.reloads.labels(result="failure").inc()
        return {"ok": False, "result": "refused", "config": exc.path,
                "problems": [{"key": k, "reason": r} for k, r in exc.problems],
                "error": f"{exc.path}: refused, the running config is kept: {exc}"}
    old = d.cfg
    changed = changes(old, new)
    for c in changed:
        if c["applies"] == "on restart":
            log.warning("config %s changed: takes effect on restart", c["key"])
    d.cfg = new
    engine = d._engine()
    if new.ban != old.ban and d.follower is not None:
        # Rebuild the policy under the new rules from the same evidence: stop the
        # follower, finish what it already read, replay the window, resume.
        d.follower.stop()
        while True:
            try:
                d._guarded(d.queue.get_nowait())
            except queue.Empty:
                break
        engine.cfg = new
        # New rules: the saved counters were scored under the old ones.
        engine.rebuild(d.follower.backlog(new.ban.find_time), d.clock(),
                       saved_counters=False)
        d.follower.start(d._emit)
    if any(getattr(old, s) != getattr(new, s) for s in type(new).model_fields
           if s not in NOT_DRIFT):
        before = d.drift
        if before is not None:
            before.stop()
        d._host_drift(new)
        if d.drift is not None:
            if before is not None:
                d.drift.carry_over(before)
            d.drift.start_watcher()
    if d.drift is not None:
        d.drift.check("reload")
    held_back = []
    if d.store is not None:
        gate = d.host.gate
        gate.apply(new, d.store, d.clock())
        if tuple(new.access.sources) != gate.sources:
            held_back.append({"key": "access.sources", "reason": (
                "the lockout guard kept " + (", ".join(gate.sources) or "allow-only mode off")
                + ": the new networks would shut out " + ", ".join(gate.refused[:5]))})
    d.config_loaded_at = d.clock()
    d.metrics.reloads.labels(result="success").inc()
    log.info("configuration reloaded from %s: %s", path, summary(changed))
    return {"ok": True, "result": "applied", "config": path, "changed": changed,
            "held_back": held_back}


def changes(old: config.Config, new: config.Config) -> list[dict[str, Any]]:
    """Every leaf key whose value differs, as {"key", "old", "new", "applies"} ("now" or
    "on restart"), in file order. Values are shown as the config's JSON form; a password
    inside a URL is blanked, whole numbers lose their '.0'."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    out: list[dict[str, Any]] = []
    for key, was, now in _diff(a, b, ""):
        section = key.split(".", 1)[0]
        out.append({"key": key, "old": _shown(key, was), "new": _shown(key, now),
                    "applies": "on restart" if section in RESTART_ONLY else "now"})
    return out


def summary(changed: list[dict[str, Any]]) -> str:
    """One line for the journal: 'ban.max_retry 3 -> 4, metrics.port ... (on restart)'."""
    if not changed:
        return "no setting changed"
    return ", ".join(f"{c['key']} {c['old']} -> {c['new']}"
                     + (" (on restart)" if c["applies"] == "on restart" else "")
                     for c in changed)


def _diff(a: Any, b: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for k in [*a, *(k for k in b if k not in a)]:  # sshd_settings may gain keys
            found += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return found
    return [] if a == b else [(prefix, a, b)]


# A URL's user:password@ (fleet.url may carry credentials): never echoed or logged.
_USERINFO = re.compile(r"(?<=://)[^@/\s]*@")


def _shown(key: str, value: Any) -> Any:
    if isinstance(value, str) and key.endswith("url"):
        return _USERINFO.sub("***@", value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # max_retry = 3 reads back as 3, durations as whole seconds
    return value
