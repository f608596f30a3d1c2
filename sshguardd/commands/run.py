"""`sshguardd run`: the daemon in the foreground, logging to stderr (which the journal
captures under systemd). SIGTERM stops it, SIGHUP reloads the config.

`--dry-run` does everything but touch the firewall: each ban it would apply (and each
table it would create) is logged as a line starting with "dry run: would".

Exit codes: 0 stopped by a signal; 78 bad config; 74 (EX_IOERR) the state store
(state.db) is damaged or unusable: restarting will not mend it, moving it aside will;
69 the firewall, the log source or the control socket is unavailable.
"""

from __future__ import annotations

import argparse
import logging

from sshguardd import cli
from sshguardd.effects import config_file

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the daemon in the foreground")
    cli.add_config_arg(p)
    p.add_argument("--dry-run", action="store_true",
                   help="log the bans it would apply instead of changing the firewall")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_file.load(args.config)  # a bad file: ConfigError, exit 78 from the CLI
    logging.getLogger().setLevel(cfg.daemon.log_level.upper())
    from sshguardd.daemon import wiring
    from sshguardd.daemon.loop import Daemon, StartupError, StateStoreError

    dry_run = bool(args.dry_run)
    if dry_run:
        log.warning("dry run: the firewall is left alone; bans are only logged")
    try:
        return Daemon(cfg, wiring.build(cfg, dry_run=dry_run),
                      config_path=args.config).run()
    except StartupError as exc:
        # One line naming what failed and why (the alert went to the journal already);
        # a traceback would only bury it.
        log.error("%s", exc)
        return cli.EX_IOERR if isinstance(exc, StateStoreError) else cli.EX_UNAVAILABLE
