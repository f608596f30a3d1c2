"""A pure model of sshd's effective configuration, and planned edits as data.

It reads configuration the way OpenSSH's servconf.c does (checked against sshd 9.2 with
`sshd -T`):

- keywords are case-insensitive; `Keyword value`, `Keyword=value` and `Keyword = value`
  are the same; a `#` at the start of a token ends the line; double quotes group words;
- for a single-valued keyword the first value read wins, so a drop-in included at the top
  of sshd_config overrides a later line in the main file;
- `Include` takes one or more paths or globs, relative paths are under /etc/ssh, each glob
  expands in lexical (byte) order, and a pattern matching nothing is silently ignored;
- a `Match` block runs to the next `Match` or the end of the file it is in (a Match in an
  included file does not leak into the including file); an `Include` inside a Match block
  brings the included lines into that Match context.

Nothing here touches the filesystem except `load()`, which feeds the pure `parse()` with
real files. Edits are planned as data (`Edit`) and applied to text with `apply_edits`, which
changes only the bytes of the value it replaces (or inserts one line), so every comment,
blank line and unrelated setting survives byte for byte.
"""

from __future__ import annotations

import glob as _glob
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

SSH_DIR = "/etc/ssh"
MAX_INCLUDE_DEPTH = 16  # READCONF_MAX_DEPTH in OpenSSH

# Deprecated spellings sshd still accepts as the same option (servconf.c keywords table).
KEYWORD_ALIASES = {
    "challengeresponseauthentication": "kbdinteractiveauthentication",
    "skeyauthentication": "kbdinteractiveauthentication",
    "pubkeyacceptedkeytypes": "pubkeyacceptedalgorithms",
    "hostbasedacceptedkeytypes": "hostbasedacceptedalgorithms",
    "hostdsakey": "hostkey",
    "dsaauthentication": "pubkeyauthentication",
}

# Values sshd treats as the same setting; `sshd -T` prints the right-hand spelling's twin
# ("without-password") for prohibit-password, so both sides are normalised here.
VALUE_ALIASES = {
    "permitrootlogin": {"without-password": "prohibit-password"},
}

# sshd's compiled-in defaults (OpenSSH 9.2, Debian) for keywords a policy is likely to
# name, used when no line sets them. For anything else the verdict comes from `sshd -T`.
DEFAULTS = {
    "permitrootlogin": "prohibit-password",
    "passwordauthentication": "yes",
    "kbdinteractiveauthentication": "yes",
    "permitemptypasswords": "no",
    "pubkeyauthentication": "yes",
    "x11forwarding": "no",
    "maxauthtries": "6",
    "usepam": "no",
    "authorizedkeyscommand": "none",
    "authorizedkeysfile": ".ssh/authorized_keys .ssh/authorized_keys2",
    "allowtcpforwarding": "yes",
    "permituserenvironment": "no",
    "logingracetime": "120",
    "maxsessions": "10",
}


# Keywords whose lines accumulate (or are keyed by their first argument) instead of the
# first value winning: "the value that takes effect" is not one line, so a policy cannot
# be enforced by editing one. judge() leaves them out; policy_problems() names them.
MULTI_VALUED = frozenset({
    "acceptenv", "allowgroups", "allowusers", "denygroups", "denyusers", "hostkey",
    "hostcertificate", "listenaddress", "port", "setenv", "subsystem", "include", "match",
    "authorizedkeysfile", "permitopen", "permitlisten", "channeltimeout",
})


def canonical_keyword(keyword: str) -> str:
    k = keyword.lower()
    return KEYWORD_ALIASES.get(k, k)


def normalise_value(keyword: str, value: str) -> str:
    """The comparable form of a value: lower case, aliases folded."""
    v = " ".join(value.split()).lower()
    return VALUE_ALIASES.get(canonical_keyword(keyword), {}).get(v, v)


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Directive:
    """One keyword line as sshd reads it.

    keyword is canonical (lower case, aliases folded); args are the unquoted arguments;
    value_span is the (start, end) character range of the arguments in the raw line, the
    part a repair replaces. match is the chain of Match lines this line is under (empty at
    top level), each as written.
    """

    keyword: str
    args: tuple[str, ...]
    location: Location
    raw: str
    value_span: tuple[int, int]
    match: tuple[str, ...] = ()
    match_at: tuple[Location, ...] = ()  # where each of those Match lines is

    @property
    def value(self) -> str:
        return " ".join(self.args)


@dataclass(frozen=True, slots=True)
class Effective:
    """The value sshd uses for one keyword, and where it comes from (None: the default)."""

    keyword: str
    value: str
    source: Location | None
    match: tuple[str, ...] = ()


class ConfigSyntaxError(ValueError):
    def __init__(self, location: Location, reason: str):
        self.location = location
        super().__init__(f"{location}: {reason}")


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Split the arguments of a line like OpenSSH's argv_split(): whitespace separates,
    double quotes group (quotes removed), a backslash escapes a quote or backslash, and a
    token starting with '#' ends the line. Returns (token, start, end) in `text`."""
    out: list[tuple[str, int, int]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n or text[i] == "#":
            break
        start, buf, quoted = i, [], False
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n and text[i + 1] in '"\\':
                buf.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                quoted = not quoted
                i += 1
                continue
            if not quoted and c in " \t\r\n":
                break
            buf.append(c)
            i += 1
        if quoted:
            raise ValueError("unterminated quote")
        out.append(("".join(buf), start, i))
    return out


def split_line(raw: str) -> tuple[str, list[tuple[str, int, int]]] | None:
    """(keyword as written, argument tokens with spans in `raw`), or None for a blank or
    comment line. The keyword may be followed by '=' (strdelim in OpenSSH)."""
    s = raw.rstrip("\r\n")
    i = 0
    while i < len(s) and s[i] in " \t":
        i += 1
    if i >= len(s) or s[i] == "#":
        return None
    j = i
    while j < len(s) and s[j] not in " \t=":
        j += 1
    keyword = s[i:j]
    k = j
    while k < len(s) and s[k] in " \t":
        k += 1
    if k < len(s) and s[k] == "=":
        k += 1
    rest = s[k:]
    return keyword, [(t, a + k, b + k) for t, a, b in tokenize(rest)]


Reader = Callable[[str], "str | None"]
Expander = Callable[[str], "list[str]"]


def parse(main: str, read: Reader, expand: Expander, ssh_dir: str = SSH_DIR) -> SshdConfig:
    """Model the configuration rooted at `main`.

    read(path) returns a file's text or None if it does not exist; expand(pattern) returns
    the matching paths in the order sshd would read them (see `load` for the real ones).
    """
    directives: list[Directive] = []
    files: list[str] = []
    includes: list[tuple[Location, str, tuple[str, ...]]] = []

    def walk(path: str, outer_match: tuple[str, ...], outer_at: tuple[Location, ...],
             depth: int) -> None:
        text = read(path)
        if text is None:
            return
        files.append(path)
        match, match_at = outer_match, outer_at
        for lineno, raw in enumerate(text.splitlines(keepends=True), 1):
            loc = Location(path, lineno)
            try:
                parts = split_line(raw)
            except ValueError as exc:
                raise ConfigSyntaxError(loc, str(exc)) from None
            if parts is None:
                continue
            keyword, toks = parts
            kw = canonical_keyword(keyword)
            if kw == "match":
                match = outer_match + (raw.strip(),)
                match_at = outer_at + (loc,)
                continue
            if kw == "include":
                if depth >= MAX_INCLUDE_DEPTH:
                    raise ConfigSyntaxError(loc, "Include nested too deeply")
                if not toks:
                    raise ConfigSyntaxError(loc, "Include without a path")
                found: list[str] = []
                for tok, _, _ in toks:
                    pattern = tok if tok.startswith("/") else f"{ssh_dir}/{tok}"
                    found.extend(expand(pattern))
                includes.append((loc, raw, tuple(found)))
                for inc in found:
                    walk(inc, match, match_at, depth + 1)
                continue
            span = (toks[0][1], toks[-1][2]) if toks else (len(raw.rstrip("\r\n")),) * 2
            directives.append(Directive(kw, tuple(t for t, _, _ in toks), loc, raw,
                                        span, match, match_at))

    walk(main, (), (), 0)
    return SshdConfig(main, tuple(directives), tuple(files), tuple(includes), ssh_dir)


def load(main: str | os.PathLike[str], ssh_dir: str = SSH_DIR) -> SshdConfig:
    """parse() with the real filesystem. A file that cannot be read as text is an OSError."""
    return load_with_texts(main, ssh_dir)[0]


def load_with_texts(main: str | os.PathLike[str],
                    ssh_dir: str = SSH_DIR) -> tuple[SshdConfig, dict[str, str]]:
    """load(), and the text of every file exactly as the model read it, so edits planned
    from the model apply to the same bytes even if a file changes meanwhile."""
    texts: dict[str, str] = {}

    def read(path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                texts[path] = f.read()
                return texts[path]
        except FileNotFoundError:
            return None

    def expand(pattern: str) -> list[str]:
        # glob(3) in the C locale sorts by bytes; Python's str order matches for UTF-8.
        if _glob.has_magic(pattern):
            return sorted(p for p in _glob.glob(pattern) if os.path.isfile(p))
        return [pattern] if os.path.exists(pattern) else []

    return parse(os.fspath(main), read, expand, ssh_dir), texts


@dataclass(frozen=True)
class SshdConfig:
    main: str
    directives: tuple[Directive, ...]
    files: tuple[str, ...]  # every file read, in reading order
    includes: tuple[tuple[Location, str, tuple[str, ...]], ...] = field(default=())
    ssh_dir: str = SSH_DIR

    @property
    def included_dirs(self) -> list[str]:
        """Directories holding the main file and every Include pattern, for watching."""
        dirs = [os.path.dirname(self.main) or "."]
        for _loc, raw, found in self.includes:
            parts = split_line(raw)
            for tok, _, _ in (parts[1] if parts else []):
                pattern = tok if tok.startswith("/") else f"{self.ssh_dir}/{tok}"
                d = os.path.dirname(pattern)
                if not _glob.has_magic(d) and d not in dirs:
                    dirs.append(d)
            for f in found:
                d = os.path.dirname(f)
                if d not in dirs:
                    dirs.append(d)
        return dirs

    def effective(self, keyword: str) -> Effective:
        """The global (outside any Match) value of keyword: its first occurrence."""
        kw = canonical_keyword(keyword)
        for d in self.directives:
            if d.keyword == kw and not d.match:
                return Effective(kw, d.value, d.location)
        return Effective(kw, DEFAULTS.get(kw, ""), None)

    def match_overrides(self, keyword: str) -> list[Directive]:
        """The first occurrence of keyword in each Match block (later ones in the same
        block never apply)."""
        kw = canonical_keyword(keyword)
        seen: set[tuple[Location, ...]] = set()
        out = []
        for d in self.directives:
            if d.keyword == kw and d.match and d.match_at not in seen:
                seen.add(d.match_at)
                out.append(d)
        return out


# ---------------------------------------------------------------------------- judging

@dataclass(frozen=True, slots=True)
class Finding:
    """One policy item judged. For a Match override, match names the block."""

    keyword: str
    expected: str
    actual: str
    source: Location | None
    match: tuple[str, ...] = ()

    @property
    def compliant(self) -> bool:
        return normalise_value(self.keyword, self.actual) == normalise_value(
            self.keyword, self.expected)

    @property
    def item(self) -> str:
        return self.keyword if not self.match else f"{self.keyword} ({self.match[-1]})"


def policy_items(policy: Mapping[str, object]) -> dict[str, str]:
    """The policy as canonical keyword -> value text (TOML booleans become yes/no)."""
    out = {}
    for key, value in policy.items():
        if isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = str(value)
        out[canonical_keyword(key)] = text
    return out


def policy_problems(policy: Mapping[str, object]) -> list[str]:
    """Policy keywords this model cannot enforce, with the reason."""
    return [f"{kw}: its lines accumulate in sshd_config, so no single line decides it; "
            "not enforced" for kw in policy_items(policy) if kw in MULTI_VALUED]


def judge(model: SshdConfig, policy: Mapping[str, object],
          sshd_t: Mapping[str, str] | None = None) -> list[Finding]:
    """Judge every policy keyword: its global value and each Match block that sets it.

    sshd_t, when given, is `sshd -T` output as keyword -> value; it decides the global
    value of a keyword no line sets (sshd's own default), so a keyword the model has no
    default for is judged by what sshd really does.
    """
    findings = []
    for kw, expected in policy_items(policy).items():
        if kw in MULTI_VALUED:
            continue
        eff = model.effective(kw)
        actual = eff.value
        if eff.source is None and sshd_t is not None and kw in sshd_t:
            actual = sshd_t[kw]
        findings.append(Finding(kw, expected, actual, eff.source))
        for d in model.match_overrides(kw):
            findings.append(Finding(kw, expected, d.value, d.location, d.match))
    return findings


# ---------------------------------------------------------------------------- Match probes

# `sshd -T -C` insists on a value for every criterion any Match block uses, so a probe
# always carries all of these; the defaults are documentation addresses (RFC 5737) that no
# real Match block should name, and root, the user the policy is mostly about.
PROBE_DEFAULTS = {"user": "root", "host": "probe.invalid", "addr": "192.0.2.1",
                  "laddr": "192.0.2.2", "lport": "22"}
_CRITERIA = {"user": "user", "host": "host", "address": "addr",
             "localaddress": "laddr", "localport": "lport", "rdomain": "rdomain"}


def _sample(criterion: str, patterns: str) -> str | None:
    """One value that the (comma-separated, possibly negated, wildcarded) pattern list
    matches, or None if we cannot make one up."""
    for pat in patterns.split(","):
        pat = pat.strip()
        if not pat or pat.startswith("!"):
            continue
        if criterion in ("addr", "laddr"):
            if "/" in pat:
                try:
                    net = ipaddress.ip_network(pat, strict=False)
                except ValueError:
                    continue
                hosts = net.hosts()
                return str(next(iter(hosts), net.network_address))
            return pat.replace("*", "1").replace("?", "1")
        if criterion == "lport":
            return pat if pat.isdigit() else None
        return pat.replace("*", "x").replace("?", "x")
    return None


def match_context(match: tuple[str, ...]) -> dict[str, str] | None:
    """A `sshd -T -C` connection spec that satisfies every Match line in `match`, or None
    when one uses a criterion a probe cannot fake (Group, Exec-like, negation only)."""
    spec = dict(PROBE_DEFAULTS)
    for line in match:
        parts = split_line(line)
        if parts is None:
            return None
        toks = [t for t, _, _ in parts[1]]
        i = 0
        while i < len(toks):
            word = toks[i].lower()
            if word == "all":
                i += 1
                continue
            key = _CRITERIA.get(word)
            if key is None or i + 1 >= len(toks):
                return None
            value = _sample(key, toks[i + 1])
            if value is None:
                return None
            spec[key] = value
            i += 2
    return spec


# ---------------------------------------------------------------------------- edits

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


def format_value(value: str) -> str:
    return value if value and not any(c in value for c in ' \t"#') else f'"{value}"'


def plan(model: SshdConfig, findings: Iterable[Finding],
         texts: Mapping[str, str]) -> list[Edit]:
    """The smallest edits that make every non-compliant finding compliant.

    A winning line (global or in a Match block) gets its value replaced in place, in
    whichever file it is; a keyword no line sets is added to the main file before its first
    Match line (or at the end), where nothing earlier can override it. texts maps each
    file to its current text (the one the model was built from).
    """
    edits: list[Edit] = []
    for f in findings:
        if f.compliant:
            continue
        if f.source is not None:
            raw = texts[f.source.file].splitlines(keepends=True)[f.source.line - 1]
            d = next(d for d in model.directives if d.location == f.source)
            a, b = d.value_span
            new = raw[:a] + format_value(f.expected) + raw[b:]
            if a == b and not raw[:a].endswith((" ", "\t")):
                new = raw[:a] + " " + format_value(f.expected) + raw[b:]
            edits.append(Edit(f.source.file, f.source.line, raw, new, f.keyword,
                              f"{f.item}: {f.actual} -> {f.expected}"))
        else:
            text = texts[model.main]
            lines = text.splitlines(keepends=True)
            at = len(lines) + 1
            for i, raw in enumerate(lines, 1):
                parts = split_line(raw)
                if parts and canonical_keyword(parts[0]) == "match":
                    at = i
                    break
            edits.append(Edit(model.main, at, None,
                              f"{_spelling(f.keyword)} {format_value(f.expected)}\n",
                              f.keyword, f"{f.item}: {f.actual} (default) -> {f.expected}"))
    return edits


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
}


def _spelling(keyword: str) -> str:
    return _SPELLINGS.get(keyword, keyword)  # sshd accepts any case


class StaleEdit(ValueError):
    pass


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply the edits for one file. Replacements check the old line; inserts are made
    bottom-up so line numbers stay valid. Every other byte is kept."""
    lines = text.splitlines(keepends=True)
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
    lines = text.splitlines(keepends=True)
    for loc, raw, found in model.includes:
        if loc.file != path:
            continue
        ending = raw[len(raw.rstrip("\r\n")):]
        if found:
            args = " ".join(format_value(mapping[f]) for f in found)
            lines[loc.line - 1] = f"Include {args}{ending}"
        else:
            lines[loc.line - 1] = f"# {raw.rstrip()}{ending}"
    return "".join(lines)
