"""`sshguardd unban ADDR`: lift the ban covering an address (or the bans in a network)."""

from __future__ import annotations

import argparse
import json

from sshguardd import cli
from sshguardd.commands import _control


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser("unban", help="lift a ban now")
    p.add_argument("address", help="IPv4/IPv6 address or CIDR network")
    _control.add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    code, answer = _control.call(args, {"cmd": "unban", "address": args.address})
    if answer is None or code != cli.EX_OK:
        return code
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        for n in answer["removed"]:
            print(f"unbanned {n}")
    return code
