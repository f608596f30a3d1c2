"""`sshguardd check-config`: validate the config file and exit (backs ExecStartPre=).

A good file is reported with what it means in one line (which file, the drift guard's
mode, whether bans are on), so the journal line ExecStartPre= leaves says something."""

from __future__ import annotations

import argparse
import json

from sshguardd import cli, config
from sshguardd.effects import config_file


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser("check-config", help="validate the config file; exit 78 if it is bad")
    cli.add_config_arg(p)
    cli.add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_file.load(args.config)
    except config.ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "file": exc.path, "problems": [
                {"key": k, "reason": r} for k, r in exc.problems]}))
        else:
            for line in exc.lines():
                print(line)
        return cli.EX_CONFIG
    path = args.config or str(config.DEFAULT_PATH)
    drift = cfg.drift.mode if cfg.drift.enabled else "off"
    bans = "on" if cfg.ban.enabled else "off"
    if args.json:
        print(json.dumps({"ok": True, "file": path, "drift": drift, "bans": bans}))
    else:
        print(f"{path}: ok (drift guard: {drift}, bans: {bans})")
    return cli.EX_OK
