"""Assemble README.md from its own opening (everything before "## Contents") and the
sections kept in docs/, so each README section has one source. `--check` exits 1 when
README.md is not what this would write (tests/test_docs.py runs it).

    python3 scripts/gen_readme.py [--check]
"""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
readme = (root / "README.md").read_text()
head = readme.split("\n## Contents", 1)[0].rstrip() + "\n"

LINKS = {
    "(detection.md)": "(#failure-detection)",
    "(configuration.md)": "(docs/configuration.md)",
    "(cli.md)": "(docs/cli.md)",
    "(bans.md)": "(#ban-engine)",
    "(drift.md)": "(#drift-guard)",
    "(operations.md)": "(#operations)",
    "(install.md)": "(#install)",
    "(running.md)": "(#running-and-controlling-it)",
    "(ec2.md)": "(#on-ec2)",
}


def section(name: str, title: str | None = None, drop_title: bool = False) -> str:
    text = (root / "docs" / name).read_text()
    lines = text.splitlines()
    in_code = False
    levels = []
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#+ ", line):
            levels.append(len(line.split(" ")[0]))
    top = min(levels)
    out, in_code = [], False
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
            out.append(line)
            continue
        m = None if in_code else re.match(r"(#+) (.*)", line)
        if m:
            depth = len(m.group(1)) - top + 2
            if depth == 2 and title:
                out.append(f"## {title}")
                continue
            out.append("#" * depth + " " + m.group(2))
        else:
            out.append(line)
    body = "\n".join(out).strip() + "\n"
    for a, b in LINKS.items():
        body = body.replace(a, b)
    return body


demo = section("install.md").split("\n## Install", 1)
quick = demo[0]
# The set-up commands live only in "Set up": the quick start's demo is described in prose.
quick = re.sub(r"```sh\n.*?```\n", (
    "After `install.sh` (above), `sudo sshguardd demo` shows the daemon at work on a\n"
    "throwaway copy of this host before you trust it with the real one.\n"), quick, count=1,
    flags=re.S)
quick = quick.replace("## Quick start", "## See it work first: the demo")
quick = re.sub(r"On a Debian[^\n]*checkout:\n\n", "", quick)
rest = "## Install" + demo[1]

# One row per verb (Markdown table rows cannot wrap; the Python lines can).
VERBS = [
    ("sshguardd run", "the daemon, in the foreground (the unit runs it)"),
    ("sshguardd status [--json]", "what the running daemon reads, bans and repairs"),
    ("sshguardd bans [--json]", "active bans: network, remaining time, strikes, reason"),
    ("sshguardd ban ADDR [--for DURATION]", "ban an address or network now"),
    ("sshguardd unban ADDR", "lift a ban (and forget the offender's count)"),
    ("sshguardd check [--json]",
     "one-shot audit of the drift policy: exit 0 compliant, 1 drift"),
    ("sshguardd check --diff [--json]",
     ("what the daemon would change here: sshd_config edits as a diff, root's lock, "
      "what the lockout guard holds back, ports")),
    ("sshguardd check --profile NAME [--json]",
     "this host against a CIS/STIG/baseline profile: each control, pass/fail"),
    ("sshguardd resume [SETTING]", "end a revert-war pause now and repair again"),
    ("sshguardd scan FILE... [--summary] [--journal-dir DIR]",
     "offline analysis of logs and journals"),
    ("sshguardd check-config [--config PATH]",
     "validate the config; exit 78, `FILE: KEY: REASON`"),
    ("sshguardd demo [--non-interactive]", "the real daemon at work in a throwaway sandbox"),
    ("sshguardd fleet status [--json]", "fleet mode: every host sharing bans, stale ones marked"),
]

cli = """## Command line

| verb | what it does |
|---|---|
""" + "".join(
    f"| `{verb}` | {what} |\n" for verb, what in VERBS) + """
Every verb takes `--config PATH` where it reads the config, and `--json` where it prints
results. Exit status: 0 success; 1 a finding; 2 usage; 69 the daemon, firewall or another
needed service unavailable; 70 internal error; 77 the verb needs root (one line says why,
instead of a false finding); 78 bad configuration. Every option of every
verb: [docs/cli.md](docs/cli.md) (generated from the parser; also `man sshguardd`).

## Configuration

One TOML file, `/etc/sshguardd/config.toml`, validated as a whole at start and on reload
by pydantic models: unknown keys and out-of-range values are errors reported as
`FILE: KEY: REASON` with exit status 78 (`sshguardd check-config` checks a file without
starting anything). Every key is optional and every default is the production value;
`config.example.toml` lists every key with its default and a one-line comment. The full
reference, generated from the models and checked against them by the test suite, is
[docs/configuration.md](docs/configuration.md) (also `man 5 sshguardd.toml`).
"""

dev = """## Development

```
sshguardd/     the package, one folder per stage (see "How it is built" above)
tests/         pytest, run as root in private namespaces: real nft, journald, sshd, inotify,
               systemd in systemd-nspawn; tests/data holds the classifier's golden data
bench/         benchmarks that print figures side by side with fail2ban / sshguard / nft
packaging/     systemd unit and journal catalog, RPM spec, Prometheus rules and dashboard
docs/          the sections of this README (assembled by scripts/gen_readme.py), the
               CLI and configuration references and man pages (scripts/gen_docs.py)
scripts/       test.sh (the test command), the README and reference generators
```

The test command in "Set up" installs the system packages and a virtualenv (`.venv`), then
runs the whole suite inside a private mount and network namespace; arguments are passed
to pytest (`sudo ./scripts/test.sh -k nft`). The suite includes the gates: the layering
test, ruff and mypy (configured in `pyproject.toml`). Nothing touches the
host's firewall, `/etc`, `/run` or services. Benchmarks: `.venv/bin/python bench/bench_scan.py`,
`bench/bench_bans.py`, `bench/bench_journal.py`, `bench/bench_drift.py` (root; each prints
its own figures beside the peer's). History: [CHANGELOG.md](CHANGELOG.md).
"""

parts = [
    head,
    """## Contents

[The demo](#see-it-work-first-the-demo) ·
[Failure detection](#failure-detection) · [Ban engine](#ban-engine) ·
[Drift guard](#drift-guard) · [Profiles](#profiles-cis-and-stig) · [On EC2](#on-ec2) ·
[Running and controlling it](#running-and-controlling-it) ·
[Command line](#command-line) · [Configuration](#configuration) ·
[Operations](#operations) · [Fleet mode](#fleet-mode) · [Install](#install) ·
[Uninstall](#uninstall) ·
[Troubleshooting](#troubleshooting) · [How it is built](#how-it-is-built) ·
[Development](#development)
""",
    quick,
    section("detection.md"),
    section("bans.md"),
    section("drift.md"),
    section("profiles.md"),
    section("ec2.md"),
    section("running.md", title="Running and controlling it"),
    cli,
    section("operations.md", title="Operations"),
    section("fleet.md"),
    rest,
    section("architecture.md"),
    dev,
]
text = "\n".join(p.rstrip() + "\n" for p in parts)
if "--check" in sys.argv[1:]:
    if text != readme:
        print("README.md is stale: run scripts/gen_readme.py", file=sys.stderr)
        sys.exit(1)
else:
    (root / "README.md").write_text(text)
