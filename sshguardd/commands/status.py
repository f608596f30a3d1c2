"""`sshguardd status`: what the running daemon is doing."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from sshguardd import __version__, cli
from sshguardd.commands import _control


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser("status", help="show the running daemon's state (exit 69 if down)")
    _control.add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    code, answer = _control.call(args, {"cmd": "status"})
    if answer is None or code != cli.EX_OK:
        return code
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return code
    fam = answer.get("bans_by_family", {})
    # The running daemon's version is the answer's; when the installed program is another
    # one (an upgrade not restarted yet), say so rather than let either pass for the other.
    stale = "" if answer["version"] == __version__ else (
        f"  (installed: {__version__}; restart to run it)")
    rows = [
        ("daemon", (f"sshguardd {answer['version']}, pid {answer['pid']}, up "
                    f"{_control.duration(answer['uptime'])}"
                    + ("" if answer.get("healthy") else "  (UNHEALTHY)") + stale)),
        ("bans active", (f"{answer['bans_active']} (IPv4 {fam.get('ipv4', 0)}, "
                         f"IPv6 {fam.get('ipv6', 0)})")),
        ("offenders", (f"{answer['offenders_tracked']} tracked, "
                       f"{answer['offender_evictions']} evicted")),
        ("log source", f"{answer['source']}, {answer['entries_read']} entries read"),
        ("firewall", (f"{answer['firewall_errors']} errors, "
                      f"{answer['firewall_pending']} changes pending")),
        ("drift guard", f"{answer['drift_mode']}, last drift: {answer['last_drift']}"),
        *_config_row(answer),
        ("withheld", (", ".join(f"{w['network']} ({w['failures']:g} failures as "
                                f"{w['user']})" for w in answer.get("withheld", []))
                      or "none (no ban spared by admin protection)")),
    ]
    for p in answer.get("repairs_paused", []):
        until = time.strftime("%H:%M:%S UTC", time.gmtime(p["until"]))
        rows.append(("repairs paused", (f"{p['item']} in {p['file']} until {until} (revert "
                     f"war: undone {p['count']} times by {p['writer']}); `{p['resume']}` "
                     "resumes now")))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return code


def _config_row(answer: dict[str, Any]) -> list[tuple[str, str]]:
    conf = answer.get("config")
    if not conf:  # a daemon from before the field
        return []
    ban = conf["ban"]
    rules = (f"ban after {ban['max_retry']:g} failures in {_control.duration(ban['find_time'])}"
             f" for {_control.duration(ban['ban_time'])}") if ban["enabled"] else "bans off"
    read = time.strftime("%H:%M:%S UTC", time.gmtime(conf["loaded_at"]))
    return [("config", f"{conf['path']}, read {read}: {rules}")]
