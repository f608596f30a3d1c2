"""Planned edits to sshd's files, as data, and their application to text.

`apply_edits` changes only the bytes of the value it replaces (or inserts one line), so
every comment, blank line and unrelated setting survives byte for byte. Lines here are
physical lines split at "\\n" only, as sshd's getline() reads them.

With a `stamp` (the date, which the caller reads from its clock) a repair also reads well
to the next person in the file: each line sshguardd changes or adds gets a comment line
above it naming sshguardd, the date, the old value and the setting's reason (replacing
such a comment from an earlier repair rather than piling them up), and a later line that
sshd ignores because the repaired one wins, but that says the opposite (`sed -i` and
`echo >>` leave these), is commented out and says why, instead of staying live-looking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sshguardd.drift.sshd_judge import Finding
from sshguardd.drift.sshd_model import (
    SshdConfig,
    canonical_keyword,
    normalise_value,
    physical_lines,
    read_lines,
    split_line,
)


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace line `line` of `file` (1-based) with `new` (None: insert `new_line` before
    `line`; line = last + 1 appends). old is the line as it was, to refuse a stale edit."""

    file: str
    line: int
    old: str | None
    new: str
    keyword: str = ""
    reason: str = ""


class StaleEdit(ValueError):
    pass


class Unplannable(ValueError):
    """No edit of one line can make the finding hold (a value split by a NUL byte, a
    drift only sshd -T -C sees): a human has to look."""


# Keywords whose value is several arguments ("RekeyLimit 1G 1h"): each word is its own
# token. Quoted as one, sshd reads `RekeyLimit "1G 1h"` as 1G and no time limit.
SEVERAL_ARGS = frozenset({"rekeylimit"})


def format_args(keyword: str, value: str) -> str:
    """`value` as the argument text of `keyword`'s line."""
    if keyword in SEVERAL_ARGS:
        return " ".join(format_value(w) for w in value.split())
    return format_value(value)


def format_value(value: str) -> str:
    """The value as an argv_split() token that reads back as `value`."""
    if value and not any(c in value for c in " \t\"'#\\") and value.isprintable():
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SPELLINGS = {
    "permitrootlogin": "PermitRootLogin",
    "passwordauthentication": "PasswordAuthentication",
    "kbdinteractiveauthentication": "KbdInteractiveAuthentication",
    "permitemptypasswords": "PermitEmptyPasswords",
    "maxauthtries": "MaxAuthTries",
    "x11forwarding": "X11Forwarding",
    "pubkeyauthentication": "PubkeyAuthentication",
    "allowtcpforwarding": "AllowTcpForwarding",
    "permituserenvironment": "PermitUserEnvironment",
    "logingracetime": "LoginGraceTime",
    "maxsessions": "MaxSessions",
    **{k.lower(): k for k in (
        "MaxStartups", "ClientAliveInterval", "ClientAliveCountMax", "DisableForwarding",
        "GSSAPIAuthentication", "KerberosAuthentication", "HostbasedAuthentication",
        "IgnoreRhosts", "LogLevel", "RekeyLimit", "X11UseLocalhost", "Banner", "Ciphers",
        "MACs", "KexAlgorithms", "UsePAM")},  # the profiles' keywords (docs/profiles.md)
}


def _spelling(keyword: str) -> str:
    return _SPELLINGS.get(keyword, keyword)  # sshd accepts any case


# Why the policy wants each value, for the comment above a line sshguardd writes.
_REASONS = {
    "permitrootlogin": "no logins as root over SSH",
    "passwordauthentication": "keys only, password guessing gets nowhere",
    "kbdinteractiveauthentication": "no keyboard-interactive (password) prompts",
    "permitemptypasswords": "no logins to accounts with an empty password",
}
MARK = "# sshguardd "


def _comment(f: Finding, stamp: str, ending: str, was: str) -> str:
    why = _REASONS.get(f.keyword, "sshguardd policy ([drift.sshd_settings])")
    return (f"{MARK}{stamp}: {_spelling(f.keyword)} {f.expected} (was {was}): {why}"
            f"{ending}")


def _ending(raw: str) -> str:
    body = raw.rstrip("\r\n")
    return raw[len(body):] or "\n"


def _overridden(model: SshdConfig, f: Finding, texts: Mapping[str, str], stamp: str,
                winner_file: str, winner: str) -> list[Edit]:
    """Comment out the later global lines of f's keyword that contradict the policy:
    sshd reads only the first, so they change nothing but mislead whoever reads the file.
    Only single physical lines are touched (a NUL-glued line is left as it is)."""
    edits = []
    seen_winner = f.source is None
    for d in model.directives:
        if d.keyword != f.keyword or d.match:
            continue
        if d.location == f.source:
            seen_winner = True
            continue
        if not seen_winner or d.value_at is None or d.value_at.line != d.location.line:
            continue
        if normalise_value(f.keyword, d.value) == normalise_value(f.keyword, f.expected):
            continue
        raw = physical_lines(texts[d.location.file])[d.location.line - 1]
        body = raw.rstrip("\r\n")
        where = "above" if d.location.file == winner_file else f"in {winner_file}"
        edits.append(Edit(d.location.file, d.location.line, raw,
                          f"# {body}  # overridden by {winner} {where}; commented out by "
                          f"sshguardd "
                          f"{stamp}{_ending(raw)}", f.keyword,
                          f"{f.item}: overridden {d.value} commented out"))
    return edits


def plan(model: SshdConfig, findings: Iterable[Finding],
         texts: Mapping[str, str], *, stamp: str = "") -> list[Edit]:
    """The smallest edits that make every non-compliant finding compliant.

    A winning line (global or in a Match block) gets its value replaced in place, in
    whichever file it is; a keyword no line sets is added to the main file before its first
    Match line (or at the end), where nothing earlier can override it. texts maps each
    file to its current text (the one the model was built from). Raises Unplannable for a
    finding no single-line edit can fix. With `stamp` (e.g. "2026-12-01"), the comments
    and the commenting-out of the module docstring.
    """
    edits: list[Edit] = []
    for f in findings:
        if f.compliant:
            continue
        if f.context:
            raise Unplannable(f"{f.item}: sshd says {f.actual}, but no line the model "
                              "reads sets it")
        if f.source is not None:
            d = next(d for d in model.directives if d.location == f.source
                     and d.keyword == f.keyword)
            if d.value_at is None:
                raise Unplannable(f"{f.item} at {f.source}: its value is split across "
                                  "lines by a NUL byte")
            raw = physical_lines(texts[f.source.file])[d.value_at.line - 1]
            a, b = d.value_at.start, d.value_at.end
            new = raw[:a] + format_args(f.keyword, f.expected) + raw[b:]
            if a == b and not raw[:a].endswith((" ", "\t")):
                new = raw[:a] + " " + format_args(f.keyword, f.expected) + raw[b:]
            if stamp and d.value_at.line == d.location.line:
                lines = physical_lines(texts[f.source.file])
                above = lines[d.value_at.line - 2] if d.value_at.line > 1 else ""
                if above.startswith(f"{MARK}") and f" {_spelling(f.keyword)} " in above:
                    edits.append(Edit(f.source.file, d.value_at.line - 1, above, "",
                                      f.keyword, "an earlier sshguardd comment, replaced"))
                new = _comment(f, stamp, _ending(raw), f.actual) + new
            edits.append(Edit(f.source.file, d.value_at.line, raw, new, f.keyword,
                              f"{f.item}: {f.actual} -> {f.expected}"))
            if stamp:
                edits += _overridden(model, f, texts, stamp, f.source.file,
                                     f"the {_spelling(f.keyword)} {f.expected} line")
        else:
            text = texts[model.main]
            at = len(physical_lines(text)) + 1
            for line in read_lines(text):
                parts = split_line(line.text)
                if parts and canonical_keyword(parts.keyword) == "match":
                    at = line.first
                    break
            added = f"{_spelling(f.keyword)} {format_args(f.keyword, f.expected)}\n"
            if stamp:
                added = _comment(f, stamp, "\n", f"{f.actual}, sshd's default") + added
            edits.append(Edit(model.main, at, None, added,
                              f.keyword, f"{f.item}: {f.actual} (default) -> {f.expected}"))
    return edits


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply the edits for one file. Replacements check the old line; inserts are made
    bottom-up so line numbers stay valid. Every other byte is kept."""
    lines = physical_lines(text)
    # Bottom-up; several inserts at one line end up in the order they were planned.
    todo = [e for _, e in sorted(enumerate(edits), key=lambda ie: (ie[1].line, ie[0]),
                                 reverse=True)]
    for e in todo:
        if e.old is None:
            if e.line > len(lines) and lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.insert(e.line - 1, e.new)
        else:
            if e.line > len(lines) or lines[e.line - 1] != e.old:
                raise StaleEdit(f"{e.file}:{e.line} changed since it was read")
            lines[e.line - 1] = e.new
    return "".join(lines)


def edits_by_file(edits: Iterable[Edit]) -> dict[str, list[Edit]]:
    out: dict[str, list[Edit]] = {}
    for e in edits:
        out.setdefault(e.file, []).append(e)
    return out


def rewrite_includes(text: str, path: str, model: SshdConfig,
                     mapping: Mapping[str, str]) -> str:
    """`text` (the file at `path`) with each Include line pointing at explicit copies:
    the files it expanded to, renamed through `mapping`. Used to validate a candidate tree
    with `sshd -t -f` before any real file changes. An Include that matched nothing becomes
    a comment, which sshd ignores just the same."""
    lines = physical_lines(text)
    for inc in model.includes:
        if inc.location.file != path:
            continue
        first, last = inc.location.line, max(inc.last, inc.location.line)
        new = (f"Include {' '.join(format_value(mapping[f]) for f in inc.found)}\n"
               if inc.found else f"# {inc.raw}\n")
        lines[first - 1] = new
        for i in range(first, last):
            lines[i] = "\n"  # the glued rest of the line; keeps later line numbers
    return "".join(lines)
