"""The drift guard as the daemon hosts it, minus the other stages: for e2e tests and the
benchmark, run inside a Sandbox with the real default paths.

    python drift_runner.py [CONFIG] [OUTCOMES_FILE]

Loads the config (default /etc/sshguardd/config.toml), runs `check_all("start")`, then
feeds the Watcher's FileChanged through one queue to `handle()` on the main thread, like
the daemon's loop, and calls `check_all` when a revert-war pause ends. Every outcome is
appended to OUTCOMES_FILE (default /run/drift-outcomes.jsonl) as one JSON line with the
wall-clock time it was produced. Alerts go to the (sandbox's) journal. SIGTERM stops it.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import signal
import sys
import threading
import time

from sshguardd import config, drift, watcher
from sshguardd.alerts import Alerts
from sshguardd.metrics import Metrics


def main() -> int:
    import logging
    import os
    logging.basicConfig(level=os.environ.get("DRIFT_RUNNER_LOG", "INFO"),
                        format="%(asctime)s %(name)s: %(message)s")
    cfg = config.load(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None)
    path = sys.argv[2] if len(sys.argv) > 2 else "/run/drift-outcomes.jsonl"
    out = open(path, "a", buffering=1, encoding="utf-8")

    def emit(reason: str, outcomes) -> None:
        for o in outcomes:
            out.write(json.dumps({**dataclasses.asdict(o), "reason": reason,
                                  "t": time.time()}) + "\n")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    guard = drift.DriftGuard(cfg, alerts=Alerts(), metrics=Metrics())
    emit("start", guard.check_all("start"))
    events: queue.Queue = queue.Queue()
    w = watcher.Watcher(guard.watch_paths(), events.put, debounce=cfg.drift.debounce,
                        relevant=guard.is_relevant)
    w.start()
    out.write(json.dumps({"ready": True, "t": time.time()}) + "\n")
    try:
        while not stop.is_set():
            try:
                ev = events.get(timeout=0.1)
            except queue.Empty:
                wake = guard.next_wakeup()
                if wake is not None and time.time() >= wake:
                    emit("pause over", guard.check_all("revert-war pause over"))
                continue
            emit(ev.path, guard.handle(ev))
    finally:
        w.stop()
        out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
