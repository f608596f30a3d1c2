"""`sshguardd run`: the daemon in the foreground, logging to stderr (which the journal
captures under systemd). SIGTERM stops it, SIGHUP reloads the config.

Exit codes: 0 stopped by a signal; 78 bad config; 74 (EX_IOERR) the state store
(state.db) is damaged or unusable: restarting will not mend it, moving it aside will;
69 the firewall, the log source or the control socket is unavailable.
"""

from __future__ import annotations

import logging

from sshguardd import cli, config

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("run", help="run the daemon in the foreground")
    cli.add_config_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config.load(args.config)  # a bad file: ConfigError, exit 78 from the CLI
    logging.getLogger().setLevel(cfg.daemon.log_level.upper())
    from sshguardd.daemon.loop import Daemon, StartupError, StateStoreError

    try:
        return Daemon(cfg, config_path=args.config).run()
    except StartupError as exc:
        # One line naming what failed and why (the alert went to the journal already);
        # a traceback would only bury it.
        log.error("%s", exc)
        return cli.EX_IOERR if isinstance(exc, StateStoreError) else cli.EX_UNAVAILABLE
