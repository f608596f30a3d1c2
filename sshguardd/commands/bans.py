"""`sshguardd bans`: the bans in force (network, time left, strikes, reason)."""

from __future__ import annotations

import argparse
import json

from sshguardd import cli
from sshguardd.commands import _control


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser("bans", help="list active bans (exit 69 if the daemon is down)")
    _control.add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    code, answer = _control.call(args, {"cmd": "bans"})
    if answer is None or code != cli.EX_OK:
        return code
    bans = answer["bans"]
    withheld = answer.get("withheld", [])
    if args.json:
        print(json.dumps(bans, indent=2))
        return code
    if not bans:
        print("no active bans")
    else:
        rows = [[b["network"], _control.duration(b["remaining"]), str(b["strikes"]),
                 b["reason"]] for b in bans]
        print(_control.table(rows, ["NETWORK", "REMAINING", "STRIKES", "REASON"]))
    if withheld:
        print("\nnot banned (admin protection: failures against an account that logged in "
              "from there):")
        print(_control.table([[w["network"], f"{w['failures']:g}", w["user"],
                               ", ".join(w["logged_in_as"])] for w in withheld],
                             ["NETWORK", "FAILURES", "LAST TRIED", "LOGGED IN AS"]))
    return code
