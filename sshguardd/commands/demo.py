"""`sshguardd demo`: the real daemon at work on a throwaway copy of this host.

The demo itself lives in sshguardd.demo (script.py plays it); this verb checks that it can
run, plays it and turns the outcome into an exit status: 69 when it cannot run here, 1 when
a check failed, 130 on Ctrl-C (after the sandbox is torn down).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sshguardd import cli


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser(
        "demo", help="watch sshguardd repair drift and ban attackers in a throwaway sandbox",
        description="Runs the real daemon in private namespaces with copy-on-write /etc and "
        "/var, a private journal and a real sshd on loopback; drifts sshd_config and root's "
        "password, brute-forces sshd, and shows what sshguardd detects, bans and repairs. "
        "The host is not changed. Needs root.")
    p.add_argument("--non-interactive", action="store_true",
                   help="do not pause between steps; exit 1 if a check fails")
    p.add_argument("--verbose", "-v", action="store_true", help="also show the daemon's log")
    # The layers go in a fresh mkdtemp() directory below this one, never a fixed name.
    p.add_argument("--workdir", metavar="DIR", default="/var/tmp",  # noqa: S108
                   help="where the sandbox keeps its copy-on-write layers (default /var/tmp)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: every verb module is imported to build the parser, and the demo's
    # modules are not needed for any other verb.
    from sshguardd.demo import script
    from sshguardd.demo.view import View

    problem = script.preflight()
    if problem is not None:
        print(f"sshguardd demo: {problem}", file=sys.stderr)
        return cli.EX_UNAVAILABLE
    ok = script.play(View(), interactive=not args.non_interactive and sys.stdin.isatty(),
                     verbose=args.verbose, workdir=Path(args.workdir))
    return cli.EX_OK if ok else cli.EX_FINDING
