"""`sshguardd resume [SETTING]`: end a revert-war pause now (all of them without SETTING).

The drift guard stops repairing a setting that another writer keeps undoing (see
drift.revert_war); once that writer is dealt with, this resumes repairs at once instead of
at the end of the pause. The daemon judges everything again right away, so a drift still
present is repaired by the time this returns.
"""

from __future__ import annotations

import argparse
import json

from sshguardd import cli
from sshguardd.commands import _control


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser("resume", help="end a revert-war pause now and repair again")
    p.add_argument("setting", nargs="?", default=None,
                   help="the paused item, e.g. permitrootlogin or 'root password' "
                   "(default: every paused one)")
    _control.add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    code, answer = _control.call(args, {"cmd": "resume", "setting": args.setting})
    if answer is None or code != cli.EX_OK:
        return code
    if args.json:
        print(json.dumps(answer, indent=2))
        return code
    resumed = answer.get("resumed", [])
    if not resumed:
        print("nothing was paused" + (f" for {args.setting}" if args.setting else ""))
    for r in resumed:
        print(f"resumed repairs of {r['item']} in {r['file']}")
    return code
