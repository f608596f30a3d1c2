"""`sshguardd check --profile NAME [--json]`: this host judged against a profile's controls.

One row per control (and per Match block that overrides its keyword, and per file a file
control covers): the benchmark IDs, the keyword, the effective value as `sshd -T` reports
it, where it comes from (file:line; "command line (unit:line)" when sshd's unit passes it
with -o, see docs/ec2.md; "default" when nothing sets it), the requirement,
pass or fail, and whether sshguardd enforces the control or only reports it. Exit 1 when
an enforced control fails (or sshd rejects its configuration), 0 otherwise: a failing
report-only control is printed but is a decision for the site, not drift. Changes nothing.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

from sshguardd import cli, config
from sshguardd.daemon.command_line import CommandLines
from sshguardd.drift import profiles, sshd_cmdline
from sshguardd.drift.sshd_model import ConfigSyntaxError, SshdConfig
from sshguardd.effects import profile_files, sshd_files
from sshguardd.effects.sshd import ServiceError, Sshd
from sshguardd.effects.sshd_unit import SshdUnit


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    refs: list[str]
    keyword: str
    value: str
    source: str
    required: str
    ok: bool
    action: str       # "enforce" or "report"
    note: str = ""


def _keyword_rows(c: profiles.Control, model: SshdConfig | None,
                  sshd_t: dict[str, str] | None, action: str,
                  cmd: sshd_cmdline.CommandLine) -> list[Row]:
    refs = list(c.refs)
    if c.any_set is not None:
        found = [f"{k} {(sshd_t or {})[k.lower()]}" for k in c.any_set
                 if (sshd_t or {}).get(k.lower())]
        return [Row(c.id, refs, " | ".join(c.any_set), "; ".join(found) or "none set",
                    "sshd -T", c.describe(), c.holds(None, sshd_t), action)]
    eff = model.effective(c.kw) if model is not None else None
    value = (sshd_t or {}).get(c.kw)
    if value is None and eff is not None and (eff.source is not None or eff.value):
        value = eff.value
    source = str(eff.source) if eff is not None and eff.source is not None else "default"
    on_cmd = cmd.setting(c.kw)
    if on_cmd is not None:  # the command line wins over every file (sshd reads it first)
        value, source = (sshd_t or {}).get(c.kw, on_cmd.value), \
            f"command line ({on_cmd.location})"
    note = ""
    if sshd_t is not None and c.kw not in sshd_t:
        note = "sshd -T does not print this keyword (this OpenSSH may not know it)"
    rows = [Row(c.id, refs, c.keyword, (value or "(unset)").replace("\n", " "), source,
                c.describe(), c.holds(value, sshd_t), action, note)]
    for d in model.match_overrides(c.kw) if model is not None else ():
        rows.append(Row(c.id, refs, f"{c.keyword} ({d.match[-1]})", d.value,
                        str(d.location), c.describe(), c.holds(d.value, sshd_t), action,
                        "applies to connections this Match block matches"))
    return rows


def _file_rows(f: profiles.FileControl, model: SshdConfig | None,
               sshd_t: dict[str, str] | None, action: str) -> list[Row]:
    if model is None:
        return []
    hostkeys = [k for k in (sshd_t or {}).get("hostkey", "").split("\n") if k]
    rows = []
    for path in profiles.file_paths(f.files, model.main, model.files, hostkeys):
        st = profile_files.inspect(path)
        problems = f.problems(st)
        value = (f"{st.owner or st.uid}:{st.group or st.gid} {st.mode:04o}"
                 if st.kind == "file" else st.kind)
        rows.append(Row(f.id, list(f.refs), f"({f.files})", value, path, f.describe(),
                        not problems, action, "; ".join(problems)))
    return rows


def rows_for(cfg: config.Config, prof: profiles.Profile, runner: Sshd | None = None,
             unit: SshdUnit | None = None) -> list[Row]:
    """Every row of `check --profile` for this host."""
    dc = cfg.drift
    runner = runner or Sshd(dc.sshd)
    cmd = CommandLines(unit).load(runner)  # the unit's -o/-f go into every sshd -T below
    main = cmd.config or str(dc.sshd_config)
    opt_in = dc.profile_enforce if prof.name == _name(dc.profile) else ()
    rows: list[Row] = []
    model: SshdConfig | None = None
    try:
        model = sshd_files.load(main).model
    except (OSError, ConfigSyntaxError) as exc:
        rows.append(Row("sshd_config", [], "", "unreadable", main, "readable", False,
                        "enforce", str(exc)))
    sshd_t: dict[str, str] | None = None
    try:
        sshd_t = runner.effective(main)
    except ServiceError as exc:
        rows.append(Row("sshd -t", [], "", "rejected", main,
                        "sshd accepts its config", False, "enforce", exc.stderr))
    site = dc.sshd_settings.model_fields_set if prof.name != "baseline" else set()
    for c in prof.control:
        action = "enforce" if c.action == "enforce" or c.id in opt_in else "report"
        got = _keyword_rows(c, model, sshd_t, action, cmd)
        if c.kw in site:
            got = [Row(**{**asdict(r), "note": "[drift.sshd_settings] sets this keyword: "
                          "the daemon enforces that value instead"}) for r in got]
        rows += got
    for f in prof.file:
        action = "enforce" if f.action == "enforce" or f.id in opt_in else "report"
        rows += _file_rows(f, model, sshd_t, action)
    return rows


def _name(profile: str) -> str:
    return profile if profile in profiles.NAMES else profile_files.load(profile).name


def run(args: argparse.Namespace, cfg: config.Config) -> int:
    prof = profile_files.load(args.profile)
    rows = rows_for(cfg, prof)
    failed = [r for r in rows if not r.ok]
    blocking = [r for r in failed if r.action == "enforce"]
    if args.json:
        print(json.dumps({"profile": prof.name, "title": prof.title, "controls": prof.size,
                          "rows": len(rows), "passed": len(rows) - len(failed),
                          "failed": len(failed), "enforced_failed": len(blocking),
                          "items": [asdict(r) for r in rows]}, indent=2))
    else:
        print(f"profile {prof.name}: {prof.title} ({prof.size} controls)")
        table = [("ID", "KEYWORD", "VALUE", "SOURCE", "REQUIRED", "RESULT")] + [
            (r.id, r.keyword, r.value[:60], r.source, r.required[:60],
             ("pass" if r.ok else "FAIL") + f" ({r.action})") for r in rows]
        widths = [max(len(t[i]) for t in table) for i in range(5)]
        for t in table:
            print("  ".join(c.ljust(w) for c, w in zip(t[:5], widths, strict=True))
                  + "  " + t[5])
        for r in rows:
            if r.note:
                print(f"note: {r.id} {r.keyword}: {r.note}")
        print(f"{len(rows) - len(failed)} passed, {len(failed)} failed "
              f"({len(blocking)} of them enforced)")
    return cli.EX_FINDING if blocking else cli.EX_OK
