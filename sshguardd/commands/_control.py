"""Shared plumbing for the verbs that talk to the running daemon over its control socket."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sshguardd import cli
from sshguardd.effects import config_file
from sshguardd.effects import control_socket as control


def add_common(parser: argparse.ArgumentParser) -> None:
    cli.add_config_arg(parser)
    cli.add_json_arg(parser)
    parser.add_argument("--socket", metavar="PATH", default=None,
                        help="control socket (default: control.socket from the config)")


def call(args: argparse.Namespace, request: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """Send request; returns (exit code, answer). Prints the error itself when the daemon
    is unreachable (exit 69) or refuses (exit 1)."""
    path = args.socket or config_file.load(args.config).control.socket
    try:
        answer = control.request(path, request)
    except control.ControlUnavailable as exc:
        if os.geteuid() != 0:
            # The socket is root's (in /run/sshguardd, mode 0700): another user cannot tell
            # whether the daemon is down, and must not be told it is.
            raise cli.NeedsRoot(args.verb, "the control socket is root's") from None
        _error(args, str(exc))
        return cli.EX_UNAVAILABLE, None
    if not answer.get("ok"):
        _error(args, str(answer.get("error", "unknown error")))
        return cli.EX_FINDING, answer
    return cli.EX_OK, answer


def _error(args: argparse.Namespace, message: str) -> None:
    if args.json:
        print(json.dumps({"ok": False, "error": message}))
    else:
        print(f"sshguardd: {message}", file=sys.stderr)


def duration(seconds: float | None) -> str:
    """600 -> '10m', 5400 -> '1h30m'; None -> 'permanent'."""
    if seconds is None:
        return "permanent"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
        if len(parts) == 2:
            break
    return "".join(parts)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)
