"""`sshguardd check`: a one-shot audit of the drift policy, for cron, CI and humans.

Prints one row per policy item: its effective value, the file:line it comes from (or
"default"), and pass/fail. The values are what sshd itself reports (`sshd -T`) wherever
the two agree; a Match block that overrides a setting is its own row. Exit 0 when every
item passes, 1 on any drift (or when sshd rejects its configuration), 77 when not run as
root (it reads /etc/shadow, and `sshd -T` reads the host keys: as another user both fail,
which is not drift), 78 for a bad sshguardd config. Changes nothing.

`check --diff` shows what the daemon would do to this host now: the planned sshd_config
edits as a unified diff, root's password lock, what the lockout guard would hold back, the
ports it guards and the ban rules; exit 0 when it would change nothing, 1 otherwise.
install.sh and the .deb print it before they start the daemon.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sshguardd import cli, config
from sshguardd.bans import access
from sshguardd.commands import _control, check_profile
from sshguardd.daemon.command_line import CommandLines
from sshguardd.daemon.lockout_guard import LockoutGuard, ec2_ways
from sshguardd.daemon.profile_guard import ProfileGuard
from sshguardd.drift import lockout, sshd_cmdline, sshd_edits
from sshguardd.drift import shadow_rules as shadow
from sshguardd.drift import sshd_judge as sshd_config
from sshguardd.drift.sshd_model import ConfigSyntaxError, normalise_value
from sshguardd.effects import config_file, sshd_files
from sshguardd.effects.accounts import Accounts
from sshguardd.effects.packages import PackageProbe
from sshguardd.effects.sessions import ssh_peers
from sshguardd.effects.shadow_file import ShadowFile
from sshguardd.effects.sshd import ServiceError, Sshd
from sshguardd.effects.sshd_unit import SshdUnit

NEEDS_ROOT = "it reads /etc/shadow, and sshd -T reads the host keys"


@dataclass(frozen=True, slots=True)
class Row:
    item: str
    expected: str
    value: str
    source: str
    ok: bool
    note: str = ""


def audit(cfg: config.Config, runner: Sshd | None = None,
          shadow_file: ShadowFile | None = None, unit: SshdUnit | None = None) -> list[Row]:
    dc = cfg.drift
    runner = runner or Sshd(dc.sshd)
    shadow_file = shadow_file or ShadowFile(dc.shadow)
    rows: list[Row] = []
    # sshd's unit: its command line goes into every sshd -T below (docs/ec2.md).
    cmd = CommandLines(unit).load(runner)
    main = cmd.config or str(dc.sshd_config)
    rows += [Row("sshd's command line", "read as systemd reads it", "unsure", cmd.unit
                 or "sshd's unit", False, p) for p in cmd.problems]
    try:
        model = sshd_files.load(main).model
    except (OSError, ConfigSyntaxError) as exc:
        rows.append(Row("sshd_config", "readable", "unreadable", main, False, str(exc)))
        model = None
    sshd_t = None
    try:
        sshd_t = runner.effective(main)
        rows.append(Row("sshd accepts its config", "yes", "yes", main, True))
    except ServiceError as exc:
        rows.append(Row("sshd accepts its config", "yes", "no", main, False, exc.stderr))
    prof = ProfileGuard(dc, None)  # [drift] profile and sshd_settings, as the daemon has them
    policy, rules = prof.targets, prof.rules
    for problem in sshd_config.policy_problems(policy):
        kw = problem.split(":", 1)[0]
        rows.append(Row(kw, policy[kw], (sshd_t or {}).get(kw, "?").replace("\n", " "),
                        "policy", False, problem))
    if model is not None:
        for loc, why in model.unsure:
            rows.append(Row(f"sshd_config line {loc.line}", "read as sshd reads it", why,
                            str(loc), False, "fix this line by hand"))
        findings = sshd_cmdline.relocate(sshd_config.judge(model, policy, sshd_t, rules), cmd)
        for f in findings:
            note = ""
            eff = model.effective(f.keyword)
            if cmd.owns(f.source) and f.source is not None:
                note = cmd.describe(f.source) + ("" if f.compliant else (
                    "; the command line wins over sshd_config: fix it there"))
            elif not f.match and eff.source is not None and normalise_value(
                    f.keyword, eff.value) != normalise_value(f.keyword, f.actual):
                note = f"model read {eff.value!r}, sshd -T says {f.actual!r}"
            if f.match and sshd_t is not None:
                note = _probe_note(runner, main, f)
            rows.append(Row(f.item, rules[f.keyword].describe() if f.keyword in rules
                            else f.expected, f.actual,
                            str(f.source) if f.source else "default", f.compliant, note))
        if sshd_t is not None:
            known = {(f.keyword, normalise_value(f.keyword, f.actual))
                     for f in findings if not f.compliant}
            answers = {}
            for user in ("root", "sshguardd-probe"):
                ctx = {**sshd_config.PROBE_DEFAULTS, "user": user}
                try:
                    answers[sshd_config.context_spec(ctx)] = runner.effective(main, ctx)
                except ServiceError:
                    continue
            for f in sshd_config.cross_check(answers, policy, known, rules):
                rows.append(Row(f.item, f.expected, f.actual, "sshd -T -C", False,
                                "no line the model reads sets this; look by hand"))
    sp = dc.shadow_policy
    try:
        st = shadow.judge(shadow_file.read(), shadow_file.read_passwd())
    except OSError as exc:
        rows.append(Row("root password", "locked", "unknown", str(dc.shadow), False,
                        str(exc)))
        return rows
    rows.append(ways_in(cfg, runner, main, shadow_file))
    if sp.lock_root:
        where = str(shadow_file.passwd if st.passwd_hash else dc.shadow)
        locked = st.root_locked and st.shadow_root_locked
        rows.append(Row("root password", "locked",
                        "locked" if locked else ("empty" if st.root_empty
                                                 else "unlocked"),
                        where, locked or not st.root_present,
                        "" if st.root_present else "no root entry"))
    if sp.empty_passwords != "ignore":
        empty = [a for a in st.empty_password_accounts if a != "root"]
        rows.append(Row("empty passwords", "none", ", ".join(empty) or "none",
                        str(dc.shadow), not empty))
    return rows


def ways_in(cfg: config.Config, runner: Sshd, main: str, shadow_file: ShadowFile) -> Row:
    """Every way in the lockout guard sees (keys, passwords, EC2 Instance Connect, Session
    Manager). Informational: the guard, not this row, decides what a repair may do."""
    dc = cfg.drift
    guard = LockoutGuard(Accounts(runner, passwd=shadow_file.passwd),
                         tmp_root=Path(cfg.daemon.state_dir) / "tmp",
                         lock_root=dc.shadow_policy.lock_root and dc.mode == "enforce",
                         host_ways=ec2_ways(cfg))
    try:
        v = guard.verdict(main, shadow_file.read(), stop_at_first=False)
    except OSError as exc:
        return Row("ways in", "at least one", "unknown", "lockout guard", True, str(exc))
    return Row("ways in", "at least one", "; ".join(v.ways) or "none visible",
               "lockout guard (sshd -T -C)", True,
               "" if v.ways else "; ".join(f"{a.account}: {a.why_not}"
                                           for a in v.accesses[:6]))


def host_rows(cfg: config.Config, probe: PackageProbe | None = None,
              proc: str = "/proc") -> list[Row]:
    """The rest of the hardening advice: an up-to-date sshd, and SSH only from trusted
    sources (when allow-only mode is configured) without cutting a current session."""
    rows: list[Row] = []
    up = cfg.updates
    if up.enabled:
        probe = probe or PackageProbe(up.package, up.backend,
                                      dnf_releasever=up.dnf_releasever)
        s = probe.collect()
        if s.error is not None:
            rows.append(Row(f"{up.package} up to date", "no security update pending",
                            "unknown", s.backend, False, s.error))
        else:
            note = (f"update to {s.candidate} available (not a security update)"
                    if s.pending and not s.security else ", ".join(s.advisories))
            rows.append(Row(f"{up.package} up to date", "no security update pending",
                            s.installed or "not installed",
                            f"{s.backend} (candidate {s.candidate or 'none'})",
                            not s.security, note))
            rows.append(Row("sshd runs the installed binary", "yes",
                            "no" if s.stale else "yes", "/proc", not s.stale,
                            "; ".join(s.stale_reasons[:3]) + (
                                " (restart sshd)" if s.stale else "")))
    sources = cfg.access.sources
    if sources:
        ports = cfg.firewall.ports or (22,)
        cut = access.uncovered(sources, ssh_peers(ports, proc))
        rows.append(Row("access sources cover current SSH sessions", "all covered",
                        ", ".join(cut) or "all covered", "/proc/net/tcp", not cut,
                        "allow-only mode stays off until [access] sources cover these "
                        "peers (add their networks, or connect from inside)" if cut else ""))
    return rows


def _probe_note(runner: Sshd, main: str, f: sshd_config.Finding) -> str:
    """What `sshd -T -C` says for a connection this Match block matches, when that differs
    from the block's own line (an earlier block, or the global value, may win for it)."""
    ctx = sshd_config.match_context(f.match)
    if ctx is None:
        return "no sshd -T -C probe for this Match (criteria cannot be faked)"
    try:
        real = runner.effective(main, ctx).get(f.keyword, "")
    except ServiceError as exc:
        return f"sshd -T -C failed: {exc.stderr}"
    if normalise_value(f.keyword, real) == normalise_value(f.keyword, f.actual):
        return ""
    spec = ",".join(f"{k}={v}" for k, v in ctx.items())
    return f"sshd -T -C {spec} says {real}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the daemon would do to this host now (`check --diff`)."""

    mode: str                       # drift.mode: "enforce" changes, "audit" only alerts
    diff: str                       # the planned sshd_config edits, unified diff ("" none)
    edits: list[dict[str, object]]  # file, line, old, new, reason of each edit
    root_password: str              # "lock" (now unlocked), "locked", "no root entry", ...
    held_back: list[dict[str, str]] # item, file, reason: what the lockout guard keeps
    sshd_error: str                 # sshd rejects its configuration now ("" when it accepts)
    ports: list[int]
    ports_from: str                 # "firewall.ports" or "sshd -T"
    bans: str                       # one line: the ban rule
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.edits) or self.root_password == "lock"


def plan(cfg: config.Config, runner: Sshd | None = None,
         shadow_file: ShadowFile | None = None,
         passwd: Path = Path("/etc/passwd"), unit: SshdUnit | None = None) -> Plan:
    """The edits and locks an enforcing daemon would make at start-up, judged as the drift
    guard judges (the model with `sshd -T`'s answers, the lockout guard, the same planner:
    sshguardd.drift.sshd_edits)."""
    dc = cfg.drift
    runner = runner or Sshd(dc.sshd)
    shadow_file = shadow_file or ShadowFile(dc.shadow, passwd=passwd)
    prof = ProfileGuard(dc, None)
    policy, rules = prof.targets, prof.rules
    notes: list[str] = list(sshd_config.policy_problems(policy))
    cmd = CommandLines(unit).load(runner)
    notes += [f"sshd's command line: {p}" for p in cmd.problems]
    passwd_text: str | None
    try:
        shadow_text = shadow_file.read()
        passwd_text = shadow_file.read_passwd()
    except OSError as exc:
        shadow_text, passwd_text = "", None
        notes.append(f"cannot read {dc.shadow}: {exc}")
    sshd_t: dict[str, str] | None = None
    sshd_error = ""
    try:
        sshd_t = runner.effective(cmd.config or str(dc.sshd_config))
    except ServiceError as exc:
        sshd_error = exc.stderr or str(exc)
    diff, held = "", []
    edits: list[dict[str, object]] = []
    if dc.enabled:
        try:
            loaded = sshd_files.load(cmd.config or str(dc.sshd_config))
        except (OSError, ConfigSyntaxError) as exc:
            notes.append(f"cannot read {dc.sshd_config}: {exc}")
        else:
            model, texts = loaded.model, loaded.texts
            todo = []
            guarded: list[sshd_config.Finding] = []
            guard = LockoutGuard(Accounts(runner, passwd=passwd),
                                 tmp_root=Path(cfg.daemon.state_dir) / "tmp",
                                 lock_root=dc.shadow_policy.lock_root
                                 and dc.mode == "enforce", host_ways=ec2_ways(cfg))
            for loc, unsure in model.unsure:
                notes.append(f"{loc}: not read as sure as sshd reads it ({unsure}): the "
                             "daemon alerts and leaves it to you")
            for f in sshd_cmdline.relocate(sshd_config.judge(model, policy, sshd_t, rules),
                                           cmd):
                if f.compliant:
                    continue
                file = str(f.source.file) if f.source else str(dc.sshd_config)
                if cmd.owns(f.source) and f.source is not None:
                    notes.append(f"{f.keyword} {f.actual}: {cmd.describe(f.source)}; not "
                                 "repaired (the command line wins, unit files are not edited)")
                    continue
                if f.keyword in lockout.GUARDED_KEYWORDS and dc.lockout_guard:
                    refusal = guard.refusal_for(model, texts, [*guarded, f], shadow_text)
                    if not refusal:
                        guarded.append(f)
                    if refusal:
                        held.append({"item": f.item, "file": file, "reason": refusal})
                        continue
                todo.append(f)
            try:
                # The daemon's own planner, with today's date in its comments.
                planned = sshd_edits.plan(model, todo, texts,
                                          stamp=time.strftime("%Y-%m-%d", time.gmtime()))
            except sshd_edits.Unplannable as exc:
                planned = []
                notes.append(f"no edit can fix this, the daemon alerts instead: {exc}")
            for path, file_edits in sshd_edits.edits_by_file(planned).items():
                new = sshd_edits.apply_edits(texts[path], file_edits)
                diff += "".join(difflib.unified_diff(
                    texts[path].splitlines(keepends=True), new.splitlines(keepends=True),
                    fromfile=path, tofile=f"{path} (after sshguardd)"))
            edits = [{"file": e.file, "line": e.line, "old": e.old, "new": e.new,
                      "reason": e.reason} for e in planned]
    st = shadow.judge(shadow_text, passwd_text) if shadow_text else None
    if not (dc.enabled and dc.shadow_policy.lock_root):
        root = "not managed"
    elif st is None:
        root = "unknown"
    elif not st.root_present:
        root = "no root entry"
    else:
        root = "locked" if st.root_locked and st.shadow_root_locked else "lock"
    if cfg.firewall.ports:
        ports, ports_from = list(cfg.firewall.ports), "firewall.ports"
    else:
        found = [int(v) for v in (sshd_t or {}).get("port", "").split() if v.isdigit()]
        ports, ports_from = list(dict.fromkeys(found)) or [22], "sshd -T"
    b = cfg.ban
    bans = (f"{b.max_retry:g} failed logins within {_control.duration(b.find_time)} ban an "
            f"address for {_control.duration(b.ban_time)} (x{b.escalation_factor:g} each "
            f"repeat, at most {_control.duration(b.max_ban_time)}); never banned: "
            + ", ".join(b.allow) if b.enabled else "off (ban.enabled = false)")
    return Plan(dc.mode if dc.enabled else "off", diff, edits, root, held, sshd_error,
                ports, ports_from, bans, notes)


def print_plan(p: Plan, cfg: config.Config, config_path: str) -> None:
    rw = cfg.drift.revert_war
    if p.mode == "enforce":
        print("sshguardd will make these changes on this host when it starts (drift.mode = "
              '"enforce"):')
    elif p.mode == "audit":
        print('drift.mode = "audit": sshguardd only alerts; enforcing would make these '
              "changes:")
    else:
        print("the drift guard is off (drift.enabled = false): sshd_config and /etc/shadow "
              "are not touched")
    print()
    if p.diff:
        print("sshd_config (validated with sshd -t first; sshd is restarted after):")
        print(p.diff.rstrip("\n"))
    else:
        print("sshd_config: no change (every policy setting already holds)")
    for h in p.held_back:
        print(f"lockout guard holds back {h['item']} in {h['file']}: {h['reason']}")
        print(f"  to let it through: {lockout.ADVICE}")
    if not p.held_back:
        print("lockout guard: holds nothing back")
    print({"lock": "root's password: will be locked (it is unlocked now)",
           "locked": "root's password: already locked, no change"}.get(
        p.root_password, f"root's password: {p.root_password}"))
    if p.sshd_error:
        print(f"sshd rejects its configuration now: {p.sshd_error} (a repair is made only "
              "if sshd accepts the result)")
    print(f"guards port(s) {', '.join(map(str, p.ports))} (from {p.ports_from}): {p.bans}")
    print(f"revert wars: a setting undone {rw.max_reverts} times within "
          f"{_control.duration(rw.window)} is left alone for {_control.duration(rw.pause)} "
          "(`sshguardd resume` ends that early)")
    for n in p.notes:
        print(f"note: {n}")
    if p.mode == "enforce":
        print(f'to only watch first: install.sh --audit, or mode = "audit" in [drift] of '
              f"{config_path}")
    elif p.mode == "audit":
        print(f'to enforce: mode = "enforce" in [drift] of {config_path}, then '
              "systemctl reload sshguardd")


def register(sub: cli.Subparsers) -> None:
    p = sub.add_parser("check", help="audit sshd_config and /etc/shadow against the "
                       "policy; exit 1 on drift")
    cli.add_config_arg(p)
    cli.add_json_arg(p)
    p.add_argument("--diff", action="store_true",
                   help="show what the daemon would change on this host (the planned "
                   "sshd_config edits as a diff, root's lock, what the lockout guard holds "
                   "back, the guarded ports); exit 1 if it would change anything")
    p.add_argument("--profile", metavar="NAME",
                   help="judge this host against a profile's controls (baseline, cis, stig "
                   "or a profile file's absolute path): each control's ID, effective value, "
                   "source, requirement, pass/fail and enforce/report; exit 1 if an "
                   "enforced control fails (docs/profiles.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise cli.NeedsRoot("check", NEEDS_ROOT)
    cfg = config_file.load(args.config)
    if args.profile:
        return check_profile.run(args, cfg)
    if args.diff:
        p = plan(cfg)
        if args.json:
            print(json.dumps({**asdict(p), "changes": p.changes}, indent=2))
        else:
            print_plan(p, cfg, args.config or "/etc/sshguardd/config.toml")
        return cli.EX_FINDING if p.changes else cli.EX_OK
    rows = audit(cfg) + host_rows(cfg)
    compliant = all(r.ok for r in rows)
    if args.json:
        print(json.dumps({"compliant": compliant, "mode": cfg.drift.mode,
                          "items": [asdict(r) for r in rows]}, indent=2))
    else:
        header = ("ITEM", "VALUE", "SOURCE", "RESULT")
        table = [header] + [(r.item, r.value, r.source,
                             "pass" if r.ok else f"FAIL (want {r.expected})")
                            for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(3)]
        for row in table:
            # row[3] (the source) goes last, unpadded: the widths cover the first three
            print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
                  + "  " + row[3])
        for r in rows:
            if r.note:
                print(f"note: {r.item}: {r.note}")
        if not compliant and cfg.drift.lockout_guard:
            for h in plan(cfg).held_back:
                print(f"note: {h['item']}: the lockout guard will not repair it: "
                      f"{h['reason']}; to let it through: {lockout.ADVICE}")
    return cli.EX_OK if compliant else cli.EX_FINDING
