"""The `sshguardd` command line: one verb per module under sshguardd.commands.

Only this module decides exit codes (sysexits.h): 0 ok, 1 a finding (drift, a failed
check), 2 usage, 69 the firewall or another service is unavailable, 70 an internal error (a
bug: the traceback is printed; it must not read as 1, a finding), 74 the daemon's state
store is damaged or unusable, 77 the verb needs root (NeedsRoot), 78 a bad config.
Each verb module defines `register(subparsers)` and sets `func(args) -> int` on its parser.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from sshguardd import __version__

EX_OK = 0
EX_FINDING = 1
EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_NOPERM = 77
EX_CONFIG = 78

if TYPE_CHECKING:
    # What each verb's register() receives (argparse names the type only privately).
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger(__name__)

# Order is the order `--help` lists them in.
VERB_MODULES = (
    "run",
    "status",
    "bans",
    "ban",
    "unban",
    "check",
    "resume",
    "reload",
    "scan",
    "check_config",
    "demo",
    "fleet",
)


class NeedsRoot(Exception):
    """Raised by a verb run as another user when what it must read or ask needs root; main()
    prints the one line and exits 77 (EX_NOPERM) instead of reporting a finding."""

    def __init__(self, verb: str, why: str):
        super().__init__(f"sshguardd {verb}: needs root ({why}); try: sudo sshguardd {verb}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or with `only` (a verb's name) that verb alone: a run of one verb
    then imports only what that verb needs (`scan` never imports pydantic or
    prometheus_client, whose import costs more than scanning 100k lines)."""
    parser = argparse.ArgumentParser(
        prog="sshguardd",
        description="Keeps this host's SSH hardened: reverts drift in sshd_config and "
        "/etc/shadow, and bans brute-force sources with nftables.",
    )
    parser.add_argument("--version", action="version", version=f"sshguardd {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES if only is None else (only,):
        try:
            module = importlib.import_module(f"sshguardd.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sshguardd.commands.{name}":
                continue  # a verb not built yet is simply not offered
            raise
        module.register(sub)
    return parser


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="PATH", default=None,
        help="config file (default /etc/sshguardd/config.toml)",
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # `sshguardd VERB ...`: only that verb's parser is needed (anything else, such as
    # `--help` or an unknown verb, gets the whole CLI and its usual messages).
    verb = words[0] if words and words[0] in VERB_MODULES else None
    parser = build_parser(verb)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EX_USAGE
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return run_verb(args.func, args)


def run_verb(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a verb and turn what escapes it into an exit code."""
    try:
        return int(func(args))
    except NeedsRoot as exc:
        print(exc, file=sys.stderr)
        return EX_NOPERM
    except BrokenPipeError:
        return EX_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A ConfigError exists only once sshguardd.config was imported (`scan` without
        # --summary never imports it).
        config = sys.modules.get("sshguardd.config")
        if config is not None and isinstance(exc, config.ConfigError):
            for line in exc.lines():
                print(line, file=sys.stderr)
            return EX_CONFIG
        log.exception("internal error (a bug in sshguardd; please report it)")
        return EX_SOFTWARE
