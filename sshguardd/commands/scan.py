"""`sshguardd scan`: find failed logins in sshd logs offline (the role of fail2ban-regex).

    sshguardd scan FILE... [-] [--journal-dir DIR] [--summary] [--config PATH] [--json]

Inputs, any mix: syslog files (/var/log/auth.log, /var/log/secure; classic, ISO 8601 or
RFC 5424 timestamps, sshd / sshd-session lines, other programs' lines skipped), journal
export format (`journalctl -o export`, detected from its content), journal files
(`*.journal`), `-` for standard input, and journal directories (`--journal-dir`).

Output: one JSON object per detected failure on stdout, in input order:
    {"time": ISO-8601 or null, "host": ..., "user": ... or null, "kind": ...,
     "line": N, "file": ...}
`line` is the 1-based line number in a text file or stdin; for journal export input it is
the 1-based number of the entry in that stream, and for journal files and directories
the 1-based position of the entry in the journal's time order (`cursor` is added then).
Successful logins are not printed, but they are fed to the ban policy (admin protection).

`--summary` prints, instead, per-address failure counts by kind and which addresses the
configured ban policy would have banned while reading these logs (a table, or one JSON
object with --json). Everything is streamed: memory is bounded by the number of distinct
addresses (and the correlator's bounded table), not by the size of the logs.

Exit status: 0, or 66 (EX_NOINPUT) when an input could not be read (the others are still
scanned and reported), 2 for usage errors, 78 for a bad --config with --summary.
"""


from __future__ import annotations

import argparse
import os
import sys

from sshguardd import cli
from sshguardd.scan import inputs, parallel, report

EX_NOINPUT = 66  # sysexits.h: an input file did not exist or was not readable


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser(
        "scan", help="find failed sshd logins in log files or journals (offline)",
        description="Classify sshd log lines and print one JSON object per failure.")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="syslog file, journal export file, *.journal file, or - for stdin")
    p.add_argument("--journal-dir", action="append", default=[], metavar="DIR",
                   help="read a journal directory (repeatable)")
    p.add_argument("--summary", action="store_true",
                   help="print per-address counts and the bans the policy would make")
    p.add_argument("--year", type=int, default=None,
                   help="year of classic syslog timestamps (default: from the file's mtime)")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="scan large syslog files with N processes (default 1; 0 = one per CPU)")
    cli.add_config_arg(p)
    cli.add_json_arg(p)
    p.set_defaults(func=run)



def run(args: argparse.Namespace) -> int:
    if not args.files and not args.journal_dir:
        print("sshguardd scan: give FILE..., - for stdin, or --journal-dir DIR", file=sys.stderr)
        return cli.EX_USAGE
    out = sys.stdout
    if args.summary:
        # The config (pydantic) only for --summary: a plain scan starts without it.
        from sshguardd.effects import config_file

        summary = report.Summary(config_file.load(args.config))
        problems = inputs.scan_all(args.files, args.journal_dir, args.year, summary.emit_for)
        summary.write(out, args.json)
    else:
        jobs = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)
        printer = report.Printer(out)

        def take_over(path: str) -> bool:
            if jobs > 1 and path != "-" and parallel.parallel_ok(path):
                printer.flush()
                parallel.scan_parallel(path, args.year, jobs, out)
                return True
            return False

        try:
            problems = inputs.scan_all(args.files, args.journal_dir, args.year,
                                       printer.emit_for, take_over)
        finally:
            printer.flush()
    out.flush()
    for problem in problems:
        print(f"sshguardd scan: {problem}", file=sys.stderr)
    return EX_NOINPUT if problems else cli.EX_OK
