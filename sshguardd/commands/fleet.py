"""`sshguardd fleet status [--json]`: every host of the fleet, from the engine itself.

Reads the status records the hosts publish (with a TTL) straight from Valkey/Redis with
this host's credentials, so it works while the local daemon is down. A host whose record
is older than two status intervals, or has expired while its stream remains, is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sshguardd import cli
from sshguardd.commands import _control, fleet_dropin
from sshguardd.effects import config_file


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser("fleet", help="fleet mode: the hosts sharing bans (docs/fleet.md)")
    verbs = p.add_subparsers(dest="fleet_verb", metavar="VERB")
    s = verbs.add_parser("status", help="every host's status record; stale ones marked "
                         "(exit 69 if the engine is unreachable)")
    cli.add_config_arg(s)
    cli.add_json_arg(s)
    s.set_defaults(func=run_status, verb="fleet status")
    fleet_dropin.register(verbs)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return cli.EX_USAGE


def run_status(args: argparse.Namespace) -> int:
    from sshguardd.effects.fleet_transport import FleetUnavailable, from_config

    cfg = config_file.load(args.config)
    if not cfg.fleet.enabled:
        print("sshguardd: fleet mode is off ([fleet] enabled = false)", file=sys.stderr)
        return cli.EX_UNAVAILABLE
    try:
        transport = from_config(cfg.fleet)
        try:
            records = transport.statuses()
        finally:
            transport.close()
    except FleetUnavailable as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        else:
            print(f"sshguardd: {exc}", file=sys.stderr)
        return cli.EX_UNAVAILABLE
    now = time.time()
    limit = 2 * cfg.fleet.status_interval
    hosts = [_row(host, rec, now, limit) for host, rec in records.items()]
    if args.json:
        print(json.dumps({"ok": True, "now": now, "hosts": hosts}, indent=2, sort_keys=True))
        return cli.EX_OK
    if not hosts:
        print("no hosts in the fleet yet")
        return cli.EX_OK
    rows = [[h["host"], "STALE" if h["stale"] else "ok",
             "-" if h["age"] is None else _control.duration(h["age"]) + " ago",
             _compliance(h.get("compliant")), _repair(h.get("last_repair"), now),
             str(h.get("bans_active", "-")), str(h.get("fleet_bans", "-")),
             str(h.get("outbox", "-")), str(h.get("version", "-")),
             ",".join(h.get("quarantined") or []) or "-"] for h in hosts]
    print(_control.table(rows, ["HOST", "STATE", "LAST SEEN", "COMPLIANT", "LAST REPAIR",
                                "BANS", "FROM PEERS", "OUTBOX", "VERSION", "QUARANTINED"]))
    return cli.EX_OK


def _compliance(value: Any) -> str:
    # A peer's record is the peer's word: shown, never trusted to be well-formed.
    return {True: "yes", False: "NO"}.get(value, "-") if isinstance(value, bool) else "-"


def _repair(value: Any, now: float) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("time"), (int, float)):
        return "-"
    age = _control.duration(max(0.0, now - value["time"]))
    return f"{str(value.get('item', '?'))[:40]} {age} ago"


def _row(host: str, rec: dict[str, Any] | None, now: float, limit: float) -> dict[str, Any]:
    if rec is None:
        return {"host": host, "stale": True, "age": None}
    seen = rec.get("last_seen")
    age = now - seen if isinstance(seen, (int, float)) else None
    out = {k: v for k, v in rec.items() if k in ("version", "bans_active", "fleet_bans",
                                                   "outbox", "quarantined", "drift_mode",
                                                   "last_drift", "last_repair", "compliant")}
    out.update(host=host, age=None if age is None else round(age, 1),
               stale=age is None or age > limit)
    return out
