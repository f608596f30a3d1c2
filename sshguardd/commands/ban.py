"""`sshguardd ban ADDR [--for DURATION]`: ban an address or network by hand."""

from __future__ import annotations

import argparse
import json
import sys

from sshguardd import cli, durations
from sshguardd.commands import _control


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser("ban", help="ban an address or network now")
    p.add_argument("address", help="IPv4/IPv6 address or CIDR network")
    p.add_argument("--for", dest="duration", metavar="DURATION", default=None,
                   help="e.g. 90s, 10m, 1h30m, 7d (default: ban.ban_time, escalated)")
    _control.add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    request: dict[str, object] = {"cmd": "ban", "address": args.address}
    if args.duration is not None:
        try:
            request["duration"] = durations.ban_length(args.duration)
        except ValueError as exc:
            print(f"sshguardd ban: --for: {exc}", file=sys.stderr)
            return cli.EX_USAGE
    code, answer = _control.call(args, request)
    if answer is None or code != cli.EX_OK:
        return code
    ban = answer["ban"]
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        note = "" if answer.get("applied", True) else " (firewall update pending, retrying)"
        print(f"banned {ban['network']} for {_control.duration(ban['duration'])}{note}")
    return code
