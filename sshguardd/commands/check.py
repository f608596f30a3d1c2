"""`sshguardd check`: a one-shot audit of the drift policy, for cron, CI and humans.

Prints one row per policy item: its effective value, the file:line it comes from (or
"default"), and pass/fail. The values are what sshd itself reports (`sshd -T`) wherever
the two agree; a Match block that overrides a setting is its own row. Exit 0 when every
item passes, 1 on any drift (or when sshd rejects its configuration), 78 for a bad
sshguardd config. Changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from sshguardd import cli, config

from sshguardd.drift import shadow_rules as shadow

from sshguardd.drift import sshd_model as sshd_config
from sshguardd.effects.sshd import ServiceError, Sshd


@dataclass(frozen=True, slots=True)
class Row:
    item: str
    expected: str
    value: str
    source: str
    ok: bool
    note: str = ""


def audit(cfg: config.Config, runner: Sshd | None = None,
          shadow_file: shadow.ShadowFile | None = None) -> list[Row]:
    dc = cfg.drift
    runner = runner or Sshd(dc.sshd)
    shadow_file = shadow_file or shadow.ShadowFile(dc.shadow)
    rows: list[Row] = []
    main = str(dc.sshd_config)
    try:
        model = sshd_config.load(dc.sshd_config)
    except (OSError, sshd_config.ConfigSyntaxError) as exc:
        rows.append(Row("sshd_config", "readable", "unreadable", main, False, str(exc)))
        model = None
    sshd_t = None
    try:
        sshd_t = runner.effective(main)
        rows.append(Row("sshd accepts its config", "yes", "yes", main, True))
    except ServiceError as exc:
        rows.append(Row("sshd accepts its config", "yes", "no", main, False, exc.stderr))
    policy = sshd_config.policy_items(dc.sshd_settings.model_dump())
    for problem in sshd_config.policy_problems(policy):
        kw = problem.split(":", 1)[0]
        rows.append(Row(kw, policy[kw], (sshd_t or {}).get(kw, "?").replace("\n", " "),
                        "policy", False, problem))
    if model is not None:
        for f in sshd_config.judge(model, policy, sshd_t):
            note = ""
            actual = f.actual
            real = (sshd_t or {}).get(f.keyword)
            if not f.match and real is not None and sshd_config.normalise_value(
                    f.keyword, real) != sshd_config.normalise_value(f.keyword, actual):
                note = f"model read {actual!r}, sshd -T says {real!r}"
                actual = real
                f = sshd_config.Finding(f.keyword, f.expected, actual, f.source, f.match)
            if f.match and sshd_t is not None:
                note = _probe_note(runner, main, f)
            rows.append(Row(f.item, f.expected, actual,
                            str(f.source) if f.source else "default", f.compliant, note))
    sp = dc.shadow_policy
    try:
        st = shadow.judge(shadow_file.read())
    except OSError as exc:
        rows.append(Row("root password", "locked", "unknown", str(dc.shadow), False,
                        str(exc)))
        return rows
    if sp.lock_root:
        rows.append(Row("root password", "locked",
                        "locked" if st.root_locked else ("empty" if st.root_empty
                                                         else "unlocked"),
                        str(dc.shadow), st.root_locked or not st.root_present,
                        "" if st.root_present else "no root entry"))
    if sp.empty_passwords != "ignore":
        empty = [a for a in st.empty_password_accounts if a != "root"]
        rows.append(Row("empty passwords", "none", ", ".join(empty) or "none",
                        str(dc.shadow), not empty))
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
    if sshd_config.normalise_value(f.keyword, real) == sshd_config.normalise_value(
            f.keyword, f.actual):
        return ""
    spec = ",".join(f"{k}={v}" for k, v in ctx.items())
    return f"sshd -T -C {spec} says {real}"


def register(sub) -> None:
    p = sub.add_parser("check", help="audit sshd_config and /etc/shadow against the "
                       "policy; exit 1 on drift")
    cli.add_config_arg(p)
    cli.add_json_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config.load(args.config)
    rows = audit(cfg)
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
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
        for r in rows:
            if r.note:
                print(f"note: {r.item}: {r.note}")
    return cli.EX_OK if compliant else cli.EX_FINDING
