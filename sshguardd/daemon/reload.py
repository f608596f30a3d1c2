"""SIGHUP's second half: re-read the config and apply what may change without a restart.

Called by `Daemon.reload` on the loop thread (after the firewall resync). An invalid file
is reported and the running config kept; new `[ban]` rules rebuild the counters from the
journal window, new `[drift]` settings restart the guard, `[access]` goes through the
lockout guard; `[firewall]`, `[source]`, `[control]`, `[metrics]` and `[daemon]` wait
for a restart.
"""

from __future__ import annotations

import logging
import queue
from typing import TYPE_CHECKING

from sshguardd import config
from sshguardd.effects import config_file

if TYPE_CHECKING:
    from sshguardd.daemon.loop import Daemon

log = logging.getLogger(__name__)


def reload_config(d: Daemon) -> None:
    path = d.config_path
    try:
        new = config_file.load(path)
    except config.ConfigError as exc:
        for line in exc.lines():
            log.error("reload refused: %s", line)
        d.alerts.startup_problem("reload", "; ".join(exc.lines()))
        d.metrics.reloads.labels(result="failure").inc()
        return
    old = d.cfg
    for section in ("firewall", "source", "control", "metrics", "daemon"):
        if getattr(old, section) != getattr(new, section):
            log.warning("config section [%s] changed: takes effect on restart", section)
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
    if new.drift != old.drift:
        if d.drift is not None:
            d.drift.stop()
        d._host_drift(new)
        if d.drift is not None:
            d.drift.start_watcher()
    if d.drift is not None:
        d.drift.check("reload")
    if d.store is not None:
        d.host.gate.apply(new, d.store, d.clock())
    d.metrics.reloads.labels(result="success").inc()
    log.info("configuration reloaded from %s", path or config.DEFAULT_PATH)

