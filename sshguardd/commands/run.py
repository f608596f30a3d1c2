"""`sshguardd run`: the daemon in the foreground, logging to stderr (which the journal
captures under systemd). SIGTERM stops it, SIGHUP reloads the config."""

from __future__ import annotations

import logging

from sshguardd import cli, config


def register(sub) -> None:
    p = sub.add_parser("run", help="run the daemon in the foreground")
    cli.add_config_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config.load(args.config)  # a bad file: ConfigError, exit 78 from the CLI
    logging.getLogger().setLevel(cfg.daemon.log_level.upper())
    from sshguardd.daemon import Daemon

    return Daemon(cfg, config_path=args.config).run()
