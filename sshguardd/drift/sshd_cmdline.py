"""sshd's command line as its systemd unit gives it: `-o` options, `-f` and the other flags
that set configuration. Pure: the unit's files arrive as (path, text) pairs.

A setting on sshd's command line beats every line of sshd_config (sshd.c processes `-o`
with process_server_config_line() before it reads the file, and for a single-valued
keyword the first value wins), so it is what sshd runs with, and no edit of sshd_config can
change it. EC2 Instance Connect on Ubuntu puts its AuthorizedKeysCommand there (a drop-in
`ssh.service.d/ec2-instance-connect.conf` that resets ExecStart= and sets
`/usr/sbin/sshd -D -o "AuthorizedKeysCommand ... %%u %%f" -o "AuthorizedKeysCommandUser
ec2-instance-connect" $SSHD_OPTS`).

The unit is read as systemd 252 reads it (systemd.syntax(7), systemd.service(7),
systemd.exec(5), restated as facts):

- a line ending in a backslash continues on the next (the backslash becomes a space);
  lines starting with `#` or `;` are comments, also inside a continuation; `[Section]`
  headers; `Key=Value` with blanks around the key and after `=` dropped;
- ExecStart= in the fragment and then each drop-in in order appends a command; an empty
  `ExecStart=` resets the list (how a drop-in replaces the command);
- the value's specifiers are expanded first (`%%` is `%`; `%n` `%N` `%p` `%i` `%I` from the
  unit name); then it is split into words: blanks separate, double and single quotes group,
  C escapes (`\\"`, `\\\\`, `\\t`, ...) are unescaped; the first word may carry the
  prefixes `@ - : + !`;
- at exec time `$NAME` as a word of its own becomes the variable's value split at blanks
  (zero or more words), `${NAME}` anywhere becomes its value as is; variables come from
  Environment= and EnvironmentFile= (a missing file is an error unless its name is
  prefixed `-`), later assignments win.

Then sshd's own getopt(3) reads the words after the program (OpenSSH 9.2's optstring
"C:E:b:c:f:g:h:k:o:p:u:46DGQRTdeiqrtV"): `-o` (keyword and value split as sshd_config
lines are), `-p` Port, `-g` LoginGraceTime, `-h` HostKey, `-c` HostCertificate, `-4`/`-6`
AddressFamily and `-q` LogLevel are settings; `-f` is the main configuration file.
Anything this model cannot expand for sure lands in `problems`, never guessed at.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sshguardd.drift.sshd_judge import Finding
from sshguardd.drift.sshd_model import Location, canonical_keyword, split_line

OPTSTRING = "C:E:b:c:f:g:h:k:o:p:u:46DGQRTdeiqrtV"
# Flags whose value is a setting sshd -T reports, as (keyword, value or None: the argument).
SETTING_FLAGS: dict[str, tuple[str, str | None]] = {
    "p": ("port", None), "g": ("logingracetime", None), "h": ("hostkey", None),
    "c": ("hostcertificate", None), "4": ("addressfamily", "inet"),
    "6": ("addressfamily", "inet6"), "q": ("loglevel", "QUIET"),
}
# Flags passed on to every `sshd -t/-T` so it answers for the configuration sshd runs with.
PASSED = frozenset("ocpgh46qu")
# Flags that make no sense for a daemon under systemd (a one-shot test, inetd mode, ...).
ODD = frozenset("CGTtiV")
_BLANK = " \t\n\r"
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "'": "'", " ": " ", ";": ";", "s": " "}


@dataclass(frozen=True, slots=True)
class Word:
    """One word of the command line and where it came from."""

    text: str
    location: Location


@dataclass(frozen=True, slots=True)
class CmdSetting:
    """One setting on sshd's command line: canonical keyword, value, where it is written."""

    keyword: str
    value: str
    location: Location
    flag: str


@dataclass(frozen=True)
class CommandLine:
    """What the unit makes sshd run with. args go to every `sshd -t/-T` (the `-f` left
    out: callers pass the file they judge); config is the unit's `-f` (None: sshd's
    default, /etc/ssh/sshd_config)."""

    unit: str = ""
    files: tuple[str, ...] = ()          # fragment, drop-ins and environment files read
    exec_start: Location | None = None
    args: tuple[str, ...] = ()
    settings: tuple[CmdSetting, ...] = ()
    config: str | None = None
    problems: tuple[str, ...] = ()

    def setting(self, keyword: str) -> CmdSetting | None:
        """The value sshd takes for keyword from its command line (the first, as sshd
        keeps the first value of a single-valued keyword)."""
        kw = canonical_keyword(keyword)
        return next((s for s in self.settings if s.keyword == kw), None)

    def owns(self, location: Location | None) -> bool:
        """True when location is a command-line setting's (not a line of sshd_config)."""
        return location is not None and any(s.location == location for s in self.settings)

    def describe(self, location: Location) -> str:
        s = next(s for s in self.settings if s.location == location)
        return f"set on sshd's command line in {location} (-{s.flag} of {self.unit})"


# ---------------------------------------------------------------------------- unit files

def unit_lines(text: str) -> list[tuple[int, str]]:
    """(first physical line, logical line) of a unit file, continuations joined."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for no, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        stripped = line.lstrip(_BLANK)
        if stripped.startswith(("#", ";")):
            continue  # a comment, also inside a continuation
        if not buf:
            start = no
            if not stripped:
                continue
        if line.endswith("\\"):
            buf.append(line[:-1] + " ")
            continue
        buf.append(line)
        out.append((start, "".join(buf).strip(_BLANK)))
        buf = []
    if buf:
        out.append((start, "".join(buf).strip(_BLANK)))
    return out


def assignments(path: str, text: str, section: str = "Service") -> list[tuple[str, str, Location]]:
    """Every Key=Value of one section: (key, value, location), in order."""
    out = []
    current = ""
    for no, line in unit_lines(text):
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        if current != section or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out.append((key.strip(_BLANK), value.strip(_BLANK), Location(path, no)))
    return out


def expand_specifiers(value: str, unit: str) -> tuple[str, str]:
    """The value with its %-specifiers expanded from the unit name, and a problem ('' if
    none) when it uses one that depends on the running system."""
    name, _, _suffix = unit.rpartition(".")
    prefix, _, instance = name.partition("@")
    known = {"%": "%", "n": unit, "N": name, "p": prefix, "P": prefix, "i": instance,
             "I": instance}
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "%" and i + 1 < len(value):
            spec = value[i + 1]
            if spec not in known:
                return value, f"ExecStart uses the specifier %{spec}, which depends on the host"
            out.append(known[spec])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), ""


def split_words(value: str) -> list[str]:
    """extract_first_word() with quotes and C escapes, repeatedly. ValueError for an
    unterminated quote (systemd rejects the line)."""
    words: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in _BLANK:
            i += 1
        if i >= n:
            return words
        word: list[str] = []
        quote = ""
        while i < n:
            c = value[i]
            if c == "\\" and i + 1 < n:
                nxt = value[i + 1]
                if quote == "'" and nxt not in "\\'":
                    word.append(c)
                    i += 1
                    continue
                word.append(_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            if quote:
                if c == quote:
                    quote = ""
                else:
                    word.append(c)
                i += 1
                continue
            if c in "\"'":
                quote = c
                i += 1
                continue
            if c in _BLANK:
                break
            word.append(c)
            i += 1
        if quote:
            raise ValueError("unterminated quote")
        words.append("".join(word))


def parse_env_file(path: str, text: str) -> dict[str, tuple[str, Location]]:
    """An EnvironmentFile=: NAME=VALUE lines (`#`/`;` comments, `export ` tolerated),
    single quotes literal, double quotes with backslash escapes, unquoted values with
    trailing blanks removed."""
    out: dict[str, tuple[str, Location]] = {}
    for no, line in unit_lines(text):
        if "=" not in line:
            continue
        key, _, raw = line.partition("=")
        key = key.strip(_BLANK).removeprefix("export ").strip(_BLANK)
        raw = raw.strip(_BLANK)
        if len(raw) >= 2 and raw[0] == raw[-1] == "'":
            value = raw[1:-1]
        elif len(raw) >= 2 and raw[0] == raw[-1] == '"':
            body, value, i = raw[1:-1], "", 0
            while i < len(body):
                if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in '"\\`$':
                    value += body[i + 1]
                    i += 2
                else:
                    value += body[i]
                    i += 1
        else:
            value = raw
        if key:
            out[key] = (value, Location(path, no))
    return out


def _substitute(word: Word, env: dict[str, tuple[str, Location]],
                problems: list[str]) -> list[Word]:
    text = word.text
    if text.startswith("$") and not text.startswith("${") and text[1:].replace(
            "_", "a").isalnum():
        got = env.get(text[1:])
        if got is None:
            return []
        return [Word(w, got[1]) for w in got[0].split()]
    out, i, at = [], 0, word.location
    while i < len(text):
        if text.startswith("${", i) and "}" in text[i:]:
            end = text.index("}", i)
            got = env.get(text[i + 2:end])
            if got is not None:
                out.append(got[0])
                at = got[1]
            i = end + 1
            continue
        out.append(text[i])
        i += 1
    if "$" in "".join(out) and "$" in text:
        problems.append(f"{word.location}: {text!r}: a $ sshguardd does not expand as "
                        "systemd would")
    return [Word("".join(out), at)]


EnvReader = Callable[[str], "str | None"]


def command_line(unit: str, files: Sequence[tuple[str, str]],
                 read_env: EnvReader) -> CommandLine:
    """sshd's command line from the unit's fragment and drop-ins (in the order systemd
    applies them). read_env(path) returns an EnvironmentFile's text or None if missing."""
    problems: list[str] = []
    execs: list[tuple[str, Location]] = []
    env: dict[str, tuple[str, Location]] = {}
    read: list[str] = [p for p, _ in files]
    for path, text in files:
        for key, value, loc in assignments(path, text):
            if key == "ExecStart":
                if value:
                    execs.append((value, loc))
                else:
                    execs = []
            elif key == "Environment":
                try:
                    for item in split_words(value):
                        name, eq, v = item.partition("=")
                        if eq:
                            env[name] = (v, loc)
                except ValueError:
                    problems.append(f"{loc}: Environment= with an unterminated quote")
            elif key == "EnvironmentFile" and value:
                optional = value.startswith("-")
                env_path = value[1:] if optional else value
                got = read_env(env_path)
                if got is None:
                    if not optional:
                        problems.append(f"{loc}: EnvironmentFile {env_path} is missing "
                                        "(systemd would not start sshd)")
                    continue
                read.append(env_path)
                env.update(parse_env_file(env_path, got))
    if not execs:
        return CommandLine(unit, tuple(read), problems=tuple(problems + [
            f"{unit} has no ExecStart"]))
    if len(execs) > 1:
        problems.append(f"{unit} has {len(execs)} ExecStart= lines; judged the first")
    value, loc = execs[0]
    expanded, why = expand_specifiers(value, unit)
    if why:
        problems.append(f"{loc}: {why}")
    try:
        raw = split_words(expanded)
    except ValueError:
        return CommandLine(unit, tuple(read), loc, problems=tuple(problems + [
            f"{loc}: ExecStart has an unterminated quote"]))
    words: list[Word] = []
    for w in raw:
        words += _substitute(Word(w, loc), env, problems)
    if words:
        words[0] = Word(words[0].text.lstrip("@-:+!"), words[0].location)
    return _sshd_options(unit, tuple(dict.fromkeys(read)), loc, words[1:], problems)


def _sshd_options(unit: str, read: tuple[str, ...], loc: Location, words: Sequence[Word],
                  problems: list[str]) -> CommandLine:
    """getopt(3) over sshd's arguments."""
    args: list[str] = []
    settings: list[CmdSetting] = []
    config = None
    i = 0
    while i < len(words):
        w = words[i]
        if w.text == "--":
            i += 1
            break
        if not w.text.startswith("-") or w.text == "-":
            break  # getopt stops at the first operand
        j = 1
        while j < len(w.text):
            flag = w.text[j]
            takes = OPTSTRING.find(flag + ":") >= 0
            if flag not in OPTSTRING:
                problems.append(f"{w.location}: sshd does not know -{flag}")
                j += 1
                continue
            value = None
            if takes:
                if j + 1 < len(w.text):
                    value = w.text[j + 1:]
                elif i + 1 < len(words):
                    i += 1
                    value = words[i].text
                else:
                    problems.append(f"{w.location}: -{flag} without its argument")
                    break
                j = len(w.text)
            else:
                j += 1
            _one(flag, value, w.location, args, settings, problems)
            if flag == "f" and value is not None:
                config = value
        i += 1
    if i < len(words):
        problems.append(f"{loc}: sshd ignores the arguments after its options: "
                        + " ".join(x.text for x in words[i:]))
    return CommandLine(unit, read, loc, tuple(args), tuple(settings), config,
                       tuple(problems))


def _one(flag: str, value: str | None, at: Location, args: list[str],
         settings: list[CmdSetting], problems: list[str]) -> None:
    if flag in ODD:
        problems.append(f"{at}: -{flag} on sshd's command line in a unit")
        return
    if flag in PASSED:
        args += [f"-{flag}", value] if value is not None else [f"-{flag}"]
    if flag == "o" and value is not None:
        try:
            parts = split_line(value)
        except ValueError:
            problems.append(f"{at}: -o {value!r}: an unterminated quote (sshd refuses it)")
            return
        if parts is not None:
            settings.append(CmdSetting(canonical_keyword(parts.keyword),
                                       " ".join(t for t, _, _ in parts.args), at, "o"))
    elif flag in SETTING_FLAGS:
        kw, fixed = SETTING_FLAGS[flag]
        settings.append(CmdSetting(kw, fixed if fixed is not None else value or "", at, flag))


# ---------------------------------------------------------------------------- judging

def relocate(findings: Iterable[Finding], cmd: CommandLine) -> list[Finding]:
    """Findings whose global keyword sshd takes from its command line, pointed at the
    command line (the unit file and line) instead of the sshd_config line a repair would
    edit in vain. Findings for Match blocks stay: a Match block still overrides the
    command line for the connections it matches."""
    out = []
    for f in findings:
        s = cmd.setting(f.keyword) if not f.match and not f.context else None
        out.append(dataclasses.replace(f, source=s.location) if s is not None else f)
    return out


def keywords(cmd: CommandLine) -> frozenset[str]:
    return frozenset(s.keyword for s in cmd.settings)
