"""`sshguardd check-config`: validate the config file and exit (backs ExecStartPre=)."""

from __future__ import annotations

import json

from sshguardd import cli, config


def register(sub) -> None:
    p = sub.add_parser("check-config", help="validate the config file; exit 78 if it is bad")
    cli.add_config_arg(p)
    cli.add_json_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        config.load(args.config)
    except config.ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "file": exc.path, "problems": [
                {"key": k, "reason": r} for k, r in exc.problems]}))
        else:
            for line in exc.lines():
                print(line)
        return cli.EX_CONFIG
    print(json.dumps({"ok": True}) if args.json else "ok")
    return cli.EX_OK
