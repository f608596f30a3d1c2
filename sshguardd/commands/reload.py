"""`sshguardd reload`: apply the config file to the running daemon and say what happened.

It returns only once the daemon has applied the file (or refused it), so what `status`
shows right after is the new config; the unit's ExecReload= runs it, which makes
`systemctl reload sshguardd` just as synchronous and fail when the file is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sshguardd import cli, config
from sshguardd.commands import _control
from sshguardd.effects import config_file
from sshguardd.effects import control_socket as control

# The daemon answers a reload within 55 s (daemon.loop.RELOAD_ANSWER_WAIT); wait longer.
ANSWER_TIMEOUT = 70.0

DESCRIPTION = """\
Re-read the config file in the running daemon, and return once it is in force. Prints
what changed (and which of it waits for a restart); a file the daemon refuses is named
key by key, and the daemon keeps running on its previous config. Also re-checks the
firewall table and judges drift again, as SIGHUP does. Exit status: 0 applied; 1 applied,
except what the lockout guard held back (named); 69 the daemon is not running or did not
answer; 70 the reload failed inside the daemon (see its journal); 77 not root; 78 the
file was refused."""


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser("reload", help="apply the config file to the running daemon now",
                       description=DESCRIPTION)
    _control.add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise cli.NeedsRoot("reload", "the control socket is root's")
    # The socket is the running daemon's: a file it is about to refuse may not say where
    # that is, so an invalid file falls back to the default (--socket names another).
    socket_path, unreadable = args.socket, False
    if socket_path is None:
        try:
            socket_path = config_file.load(args.config).control.socket
        except config.ConfigError:
            socket_path, unreadable = config.ControlConfig().socket, True
    try:
        answer = control.request(socket_path, {"cmd": "reload"}, timeout=ANSWER_TIMEOUT)
    except control.ControlUnavailable as exc:
        hint = " (the config file is invalid too; --socket names the socket)" \
            if unreadable else ""
        message = (f"sshguardd is not running or not answering ({exc}); nothing was "
                   f"reloaded{hint}")
        if args.json:
            print(json.dumps({"ok": False, "result": "unavailable", "error": message}))
        else:
            print(f"sshguardd reload: {message}", file=sys.stderr)
        return cli.EX_UNAVAILABLE
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        _print(answer)
    return _code(answer)


def _code(answer: dict[str, Any]) -> int:
    result = answer.get("result")
    if result == "applied":
        return cli.EX_FINDING if answer.get("held_back") else cli.EX_OK
    if result == "refused":
        return cli.EX_CONFIG
    if result == "failed":
        return cli.EX_SOFTWARE
    return cli.EX_UNAVAILABLE  # busy, stopping: no outcome to report


def _print(answer: dict[str, Any]) -> None:
    result = answer.get("result")
    if result == "refused":
        for p in answer.get("problems", []):
            print(f"{answer['config']}: {p['key']}: {p['reason']}", file=sys.stderr)
        print(f"sshguardd reload: refused {answer['config']}; the daemon keeps running on "
              "its previous config", file=sys.stderr)
        return
    if result != "applied":
        error = str(answer.get("error", "no outcome"))
        if error.startswith("unknown command"):  # upgraded, not restarted yet
            error += " (the running daemon predates it: systemctl restart sshguardd)"
        print(f"sshguardd reload: {error}", file=sys.stderr)
        return
    changed = answer.get("changed", [])
    print(f"reloaded {answer['config']}: " + (f"{len(changed)} setting(s) changed"
                                              if changed else "no setting changed"))
    for c in changed:
        when = "  (takes effect on restart)" if c["applies"] == "on restart" else ""
        print(f"  {c['key']}: {_value(c['old'])} -> {_value(c['new'])}{when}")
    for h in answer.get("held_back", []):
        print(f"sshguardd reload: {h['key']} held back: {h['reason']}", file=sys.stderr)


def _value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else repr(v) if " " in v or not v else v

