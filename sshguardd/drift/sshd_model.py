"""A pure model of the configuration sshd reads: its line reading, Include and Match.

It reads text the way OpenSSH 9.2's servconf.c and misc.c do (checked with `sshd -T` and
by the differential fuzzer in tests/test_sshd_model_vs_sshd.py):

- load_server_config(): a line is what getline() returns (split at "\\n" only), with
  leading " \\t\\r" skipped; sshd keeps strlen() of it, so a NUL drops the rest of that
  line *and its newline*, gluing the next line on (`Ma\\0\\ntch Address *` is
  `Match Address *`);
- process_server_config_line_depth(): trailing " \\t\\r\\n\\f" is stripped; the keyword
  ends at the first of " \\t\\r\\n\\"=" (strdelim), one `=` may separate it from the
  arguments; the arguments are split by argv_split(): only space and tab separate, single
  and double quotes group, a backslash escapes a quote, a backslash or (unquoted) a space,
  and a token starting with `#` ends the line;
- a Match line's criteria are split by strdelim() instead (whitespace includes \\r and
  \\n, `=` separates: `Match User=root` is `Match User root`);
- keywords are case-insensitive; for a single-valued keyword the first value read wins;
- `Include` takes paths or globs (relative ones under /etc/ssh), each expanded in byte
  order; a Match block runs to the next Match or the end of the file it is in; an Include
  inside a Match brings its lines into that Match.

Where this model is not sure to read a line as sshd does (a double quote in a keyword or
a Match line, where strdelim's quote handling is not reproduced), the line is recorded in
`SshdConfig.unsure`; the guard treats that as drift and alerts instead of trusting it.

Time and files arrive as data: `parse()` takes a reader and a glob expander (the real
ones are in sshguardd.effects.sshd_files).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

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

# The character classes of servconf.c/misc.c (C locale).
LEADING = " \t\r"                # load_server_config: strspn(line, " \t\r")
TRAILING = " \t\r\n\f"           # process_server_config_line_depth: WHITESPACE "\f"
WHITESPACE = " \t\r\n"           # misc.h WHITESPACE, strdelim()'s separators
ARGV_SPACE = " \t"               # argv_split() separators


def canonical_keyword(keyword: str) -> str:
    k = keyword.lower()
    return KEYWORD_ALIASES.get(k, k)


def normalise_value(keyword: str, value: str) -> str:
    """The comparable form of a value: lower case, aliases folded."""
    v = " ".join(value.split()).lower()
    return VALUE_ALIASES.get(canonical_keyword(keyword), {}).get(v, v)


def physical_lines(text: str) -> list[str]:
    """The lines of `text` split at "\\n" only, newlines kept (str.splitlines() would
    also split at \\v, \\f, \\x1c-\\x1e, \\x85 and U+2028/9, which sshd does not)."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int  # 1-based physical line where sshd's (logical) line starts

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Span:
    """A range of one physical line: line (1-based), [start, end) in that line's text."""

    line: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class LogicalLine:
    """One line as sshd's parser gets it, and where each of its characters came from."""

    text: str
    first: int                                   # physical line it starts on
    pieces: tuple[tuple[int, int, int], ...]     # (logical offset, physical line, column)

    def span(self, start: int, end: int) -> Span | None:
        """The physical range of logical [start, end), or None if it crosses a glued
        NUL boundary (then no single physical line holds it)."""
        for i in range(len(self.pieces) - 1, -1, -1):
            off, line, col = self.pieces[i]
            if off > start:
                continue
            nxt = self.pieces[i + 1][0] if i + 1 < len(self.pieces) else len(self.text)
            if end > nxt:
                return None
            return Span(line, col + start - off, col + end - off)
        return None


def read_lines(text: str) -> list[LogicalLine]:
    """load_server_config() then strsep(buf, "\\n"): each getline() line loses leading
    " \\t\\r"; strlen() keeps only what is before a NUL (and so drops the newline)."""
    out: list[LogicalLine] = []
    buf: list[str] = []
    pieces: list[tuple[int, int, int]] = []
    length = 0
    first = 0
    for no, raw in enumerate(physical_lines(text), 1):
        skip = len(raw) - len(raw.lstrip(LEADING))
        kept = raw[skip:]
        nul = kept.find("\0")
        if nul >= 0:
            kept = kept[:nul]
        if not pieces:
            first = no
        pieces.append((length, no, skip))
        body = kept[:-1] if kept.endswith("\n") else kept
        buf.append(body)
        length += len(body)
        if kept.endswith("\n"):
            out.append(LogicalLine("".join(buf), first, tuple(pieces)))
            buf, pieces, length = [], [], 0
    if pieces:
        out.append(LogicalLine("".join(buf), first, tuple(pieces)))
    return out


class ConfigSyntaxError(ValueError):
    def __init__(self, location: Location, reason: str):
        self.location = location
        super().__init__(f"{location}: {reason}")


def argv_split(s: str, offset: int = 0) -> list[tuple[str, int, int]]:
    """misc.c argv_split(s, ..., terminate_on_comment=1): (token, start, end) with the
    positions in `s` (plus offset). Raises ValueError on an unterminated quote."""
    out: list[tuple[str, int, int]] = []
    i, n = 0, len(s)
    while i < n:
        if s[i] in ARGV_SPACE:
            i += 1
            continue
        if s[i] == "#":
            break
        start, buf, quote = i, [], ""
        while i < n:
            c = s[i]
            if c == "\\" and i + 1 < n and (s[i + 1] in "'\"\\"
                                            or (not quote and s[i + 1] == " ")):
                buf.append(s[i + 1])
                i += 2
                continue
            if not quote and c in ARGV_SPACE:
                break
            if not quote and c in "\"'":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                buf.append(c)
            i += 1
        if i >= n and quote:
            raise ValueError("invalid quotes")
        out.append(("".join(buf), start + offset, i + offset))
    return out


def strdelim(s: str, pos: int) -> tuple[str, int, int | None] | None:
    """misc.c strdelim() on s[pos:], quotes excepted (the caller checks there are none):
    (token, token start, position of the rest or None when the string ended)."""
    if pos > len(s):
        return None
    n = len(s)
    j = pos
    while j < n and s[j] not in WHITESPACE + "=":
        j += 1
    if j >= n:
        return s[pos:], pos, None
    equals = s[j] == "="
    k = j + 1
    while k < n and s[k] in WHITESPACE:
        k += 1
    if not equals and k < n and s[k] == "=":
        k += 1
        while k < n and s[k] in WHITESPACE:
            k += 1
    return s[pos:j], pos, k


@dataclass(frozen=True, slots=True)
class SplitLine:
    """A logical line read as sshd reads it."""

    keyword: str                                 # as written
    args: list[tuple[str, int, int]]             # argv_split() tokens, logical positions
    rest: int                                    # where the arguments start
    unsure: str = ""                             # why the model may not read it as sshd


def split_line(line: str) -> SplitLine | None:
    """None for a blank or comment line (as sshd skips them). An unterminated quote is
    ValueError, as sshd rejects it."""
    end = len(line)
    while end > 1 and line[end - 1] in TRAILING:
        end -= 1
    s = line[:end]
    if not s:
        return None
    first = strdelim(s, 0)
    if first is None:
        return None
    keyword, _, rest = first
    if keyword == "" and rest is not None:  # "Ignore leading whitespace" ('=' first)
        again = strdelim(s, rest)
        if again is None:
            return None
        keyword, _, rest = again
    if not keyword or keyword.startswith("#"):
        return None
    if s[:rest if rest is not None else len(s)].find('"') >= 0:
        return SplitLine(keyword, [], len(s), "a double quote in the keyword")
    if rest is None or rest >= len(s):
        return SplitLine(keyword, [], len(s))
    return SplitLine(keyword, argv_split(s[rest:], rest), rest)


def match_criteria(line: str) -> tuple[list[str], str]:
    """The words of a Match line's criteria as match_cfg_line() splits them (strdelim),
    and why the model is unsure (a quote), if it is."""
    parts = split_line(line)
    if parts is None:
        return [], ""
    end = len(line)
    while end > 1 and line[end - 1] in TRAILING:
        end -= 1
    s = line[:end]
    if '"' in s[parts.rest:]:
        return [], "a double quote in a Match line"
    words: list[str] = []
    pos: int | None = parts.rest
    while pos is not None and pos < len(s):
        got = strdelim(s, pos)
        if got is None:
            break
        word, _, pos = got
        if word.startswith("#"):
            break
        words.append(word)
    return words, parts.unsure


Reader = Callable[[str], "str | None"]
Expander = Callable[[str], "list[str]"]


@dataclass(frozen=True, slots=True)
class Directive:
    """One keyword line as sshd reads it.

    keyword is canonical (lower case, aliases folded); args are the unquoted arguments;
    value_at is the physical range of the arguments (or where they would go), the part a
    repair replaces, None when a glued NUL boundary splits it. match is the chain of
    Match lines this line is under (empty at top level), each as sshd read it.
    """

    keyword: str
    args: tuple[str, ...]
    location: Location
    raw: str                       # the logical line
    value_at: Span | None
    match: tuple[str, ...] = ()
    match_at: tuple[Location, ...] = ()  # where each of those Match lines is

    @property
    def value(self) -> str:
        return " ".join(self.args)


@dataclass(frozen=True, slots=True)
class Include:
    location: Location
    patterns: tuple[str, ...]      # absolute patterns, as sshd expands them
    found: tuple[str, ...]
    last: int = 0                  # last physical line of the (possibly glued) line
    raw: str = ""                  # the line as sshd read it


@dataclass(frozen=True, slots=True)
class Effective:
    """The value sshd uses for one keyword, and where it comes from (None: the default)."""

    keyword: str
    value: str
    source: Location | None
    match: tuple[str, ...] = ()


@dataclass(frozen=True)
class SshdConfig:
    main: str
    directives: tuple[Directive, ...]
    files: tuple[str, ...]                       # every file read, in reading order
    includes: tuple[Include, ...] = field(default=())
    ssh_dir: str = SSH_DIR
    unsure: tuple[tuple[Location, str], ...] = ()  # lines the model may misread

    @property
    def included_dirs(self) -> list[str]:
        """Directories holding the main file and every Include pattern, for watching."""
        dirs = [posixpath.dirname(self.main) or "."]
        for inc in self.includes:
            for pattern in inc.patterns:
                d = posixpath.dirname(pattern)
                if not has_magic(d) and d not in dirs:
                    dirs.append(d)
            for f in inc.found:
                d = posixpath.dirname(f)
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


def has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def parse(main: str, read: Reader, expand: Expander, ssh_dir: str = SSH_DIR) -> SshdConfig:
    """Model the configuration rooted at `main`.

    read(path) returns a file's text or None if it does not exist; expand(pattern) returns
    the matching paths in the order sshd would read them.
    """
    directives: list[Directive] = []
    files: list[str] = []
    includes: list[Include] = []
    unsure: list[tuple[Location, str]] = []

    def walk(path: str, outer_match: tuple[str, ...], outer_at: tuple[Location, ...],
             depth: int) -> None:
        text = read(path)
        if text is None:
            return
        files.append(path)
        match, match_at = outer_match, outer_at
        for line in read_lines(text):
            loc = Location(path, line.first)
            try:
                parts = split_line(line.text)
            except ValueError as exc:
                raise ConfigSyntaxError(loc, str(exc)) from None
            if parts is None:
                continue
            if parts.unsure:
                unsure.append((loc, parts.unsure))
            kw = canonical_keyword(parts.keyword)
            if kw == "match":
                _, why = match_criteria(line.text)
                if why:
                    unsure.append((loc, why))
                match = outer_match + (line.text.strip(TRAILING),)
                match_at = outer_at + (loc,)
                continue
            toks = parts.args
            if kw == "include":
                if depth >= MAX_INCLUDE_DEPTH:
                    raise ConfigSyntaxError(loc, "Include nested too deeply")
                if not toks:
                    raise ConfigSyntaxError(loc, "Include without a path")
                patterns = tuple(t if t.startswith("/") else f"{ssh_dir}/{t}"
                                 for t, _, _ in toks)
                found: list[str] = []
                for pattern in patterns:
                    found.extend(expand(pattern))
                includes.append(Include(loc, patterns, tuple(found), line.pieces[-1][1],
                                        line.text.strip(TRAILING)))
                for inc in found:
                    walk(inc, match, match_at, depth + 1)
                continue
            if toks:
                at = line.span(toks[0][1], toks[-1][2])
            else:
                end = len(line.text.rstrip(TRAILING))
                at = line.span(end, end)
            directives.append(Directive(kw, tuple(t for t, _, _ in toks), loc, line.text,
                                        at, match, match_at))

    walk(main, (), (), 0)
    return SshdConfig(main, tuple(directives), tuple(files), tuple(includes), ssh_dir,
                      tuple(unsure))
