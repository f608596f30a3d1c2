"""/etc/shadow and /etc/passwd read as glibc's nss_files reads them; root's lock judged
and relocked in the text. Pure: texts in, texts and verdicts out, never a hash logged.

How glibc 2.36 reads these files (nss/nss_readline.c, nss/nss_files/files-parse.c,
shadow/sgetspent_r.c, pwd/fgetpwent_r.c; checked against `getent -s files` by the
differential fuzzer in tests/test_shadow_vs_glibc.py):
- a line ends at "\\n" only; C string functions stop at a NUL, so a NUL ends the line's
  content; leading isspace() characters (" \\t\\n\\v\\f\\r") are skipped; an empty line or
  one starting with '#' (after that) is skipped;
- fields are split at ':'; numeric fields go through strtoul() and a line whose numbers
  do not parse is *skipped*, so the next entry of the same name is the one used;
  shadow needs at least the name, password, lastchg, min and max fields (and then either
  nothing or warn, inactive and expire); passwd needs a numeric uid and gid;
- getspnam()/getpwnam() return the first valid entry whose name is exactly the one asked
  for (names starting with '+' or '-' are compat entries and never match).
pam_unix takes the password from passwd's second field unless that is "x" (or "##name"),
and from shadow otherwise (the pre-shadow form `pwunconv` writes): both are judged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

LockForm = Literal["!", "*LOCK*", "*"]
_ISSPACE = " \t\n\v\f\r"


def is_locked(password_field: str) -> bool:
    """True if no password can match this field.

    crypt(3) output never starts with '!' or '*', so both mark a locked account: '!'
    prefixes a kept hash (passwd -l, usermod -L), '!!' is an account never given one
    (RHEL useradd), '*' and '*LOCK*' replace it (Debian system accounts, some images).
    An empty field is the opposite: no password at all.
    """
    return password_field.startswith(("!", "*"))


def lock_field(password_field: str, form: LockForm) -> str:
    """The locked form of a field: '!' keeps the hash behind a '!' (passwd -l style, so
    `passwd -u` can restore it); '*LOCK*' and '*' replace it."""
    if is_locked(password_field):
        return password_field
    return "!" + password_field if form == "!" else form


@dataclass(frozen=True, slots=True)
class Entry:
    """One valid entry: its name, password field and where that field is in the text."""

    lineno: int
    name: str
    password: str
    start: int      # offset of the password field in the whole text
    end: int


def _lines(text: str) -> Iterator[tuple[int, int, str, int]]:
    """(line number, offset of the content, content, length that maps back to the text)
    for each line nss_files parses.

    nss_readline() reads a line with fgets(), skips leading isspace() and then
    memmove()s strlen(p) bytes to the front *without the terminating NUL*, so the last k
    characters stay behind it (k = whitespace skipped): `  root:H` at the end of a file
    with no final newline reads as `root:HH`. parse_line() then stops at the first "\n".
    Only the first `mapped` characters of the content are where the text has them."""
    offset = 0
    parts = text.split("\n")
    for lineno, seg in enumerate(parts, 1):
        base = offset
        offset += len(seg) + 1
        raw = seg + "\n" if lineno < len(parts) else seg
        nul = raw.find("\0")
        c = raw[:nul] if nul >= 0 else raw
        k = len(c) - len(c.lstrip(_ISSPACE))
        if not c[k:] or c[k] == "#":
            continue
        content = (c[k:] + c[len(c) - k:]) if k else c
        content = content.split("\n", 1)[0]
        yield lineno, base + k, content, len(c) - k


def _strtoul_end(s: str, i: int) -> int:
    """Where glibc's number parsing (strtoul-like, with a range check) leaves endp: i
    itself when there are no digits, -1 when the number is refused (negative, or above
    2**32 - 1: `getent` skips such a line; checked on glibc 2.36)."""
    j = i
    while j < len(s) and s[j] in _ISSPACE:
        j += 1
    negative = j < len(s) and s[j] == "-"
    if j < len(s) and s[j] in "+-":
        j += 1
    k = j
    while k < len(s) and "0" <= s[k] <= "9":
        k += 1
    if k == j:
        return i
    value = int(s[j:k])
    if (negative and value) or value > 0xFFFFFFFF:
        return -1
    return k


def _string_field(s: str, i: int) -> tuple[int, int, int]:
    """STRING_FIELD(ISCOLON, 0): (start, end, next position)."""
    j = s.find(":", i)
    if j < 0:
        return i, len(s), len(s)
    return i, j, j + 1


def _int_maybe_null(s: str, i: int, colon: bool = True) -> int | None:
    """INT_FIELD_MAYBE_NULL: the next position, or None when the line is invalid."""
    if i >= len(s):
        return None  # "We expect some more input"
    e = _strtoul_end(s, i)
    if e < 0:
        return None
    if colon and e < len(s) and s[e] == ":":
        return e + 1
    return e if e >= len(s) else None


def _int_field(s: str, i: int) -> int | None:
    """INT_FIELD (passwd's uid and gid): digits required."""
    e = _strtoul_end(s, i)
    if e <= i:
        return None
    if e < len(s) and s[e] == ":":
        return e + 1
    return e if e >= len(s) else None


def _parse_shadow(s: str) -> tuple[tuple[int, int, int], tuple[int, int]] | None:
    _, name_end, i = _string_field(s, 0)
    name = s[:name_end]
    if i >= len(s) and name[:1] in ("+", "-"):
        return (name_end, i, i), (i, i)
    pw_start, pw_end, i = _string_field(s, i)
    for _ in range(3):  # lastchg, min, max
        n = _int_maybe_null(s, i)
        if n is None:
            return None
        i = n
    while i < len(s) and s[i] in _ISSPACE:
        i += 1
    if i < len(s):
        for _ in range(3):  # warn, inactive, expire
            n = _int_maybe_null(s, i)
            if n is None:
                return None
            i = n
        if i < len(s) and _int_maybe_null(s, i, colon=False) is None:
            return None  # flag: a number and nothing after it
    return (name_end, 0, 0), (pw_start, pw_end)


def _parse_passwd(s: str) -> tuple[int, tuple[int, int]] | None:
    _, name_end, i = _string_field(s, 0)
    name = s[:name_end]
    if i >= len(s) and name[:1] in ("+", "-"):
        return name_end, (i, i)
    pw_start, pw_end, i = _string_field(s, i)
    if name[:1] in ("+", "-"):
        return name_end, (pw_start, pw_end)  # compat entries never match a name
    for _ in range(2):  # uid, gid
        n = _int_field(s, i)
        if n is None:
            return None
        i = n
    return name_end, (pw_start, pw_end)


def _entry(lineno: int, base: int, body: str, mapped: int, name_end: int, a: int,
           b: int) -> Entry:
    # A field reaching into what nss_readline left behind is not in the text as glibc
    # reads it: start = end = -1, and relocking it refuses (ShadowFormatError).
    if b > mapped:
        return Entry(lineno, body[:name_end], body[a:b], -1, -1)
    return Entry(lineno, body[:name_end], body[a:b], base + a, base + b)


def shadow_entries(text: str) -> list[Entry]:
    """Every entry glibc accepts from a shadow file, in order."""
    out = []
    for lineno, base, body, mapped in _lines(text):
        parsed = _parse_shadow(body)
        if parsed is None:
            continue
        (name_end, _, _), (a, b) = parsed
        out.append(_entry(lineno, base, body, mapped, name_end, a, b))
    return out


def passwd_entries(text: str) -> list[Entry]:
    """Every entry glibc accepts from a passwd file, in order."""
    out = []
    for lineno, base, body, mapped in _lines(text):
        parsed = _parse_passwd(body)
        if parsed is None:
            continue
        name_end, (a, b) = parsed
        out.append(_entry(lineno, base, body, mapped, name_end, a, b))
    return out


def lookup(found: list[Entry], name: str) -> Entry | None:
    """getspnam()/getpwnam() in nss_files: the first valid entry of exactly that name."""
    if name[:1] in ("+", "-"):
        return None
    return next((e for e in found if e.name == name), None)


def entries(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, account, password field) for each shadow entry; never logged."""
    for e in shadow_entries(text):
        yield e.lineno, e.name, e.password


def shadowed(name: str, field: str) -> bool:
    """pam_unix's is_pwd_shadowed(): passwd's field points at shadow."""
    return field == "x" or field == f"##{name}"


@dataclass(frozen=True, slots=True)
class ShadowState:
    """What the policy cares about in the account files. Never holds a hash.

    root_present/root_locked/root_empty describe the password pam_unix checks for root:
    passwd's field when it holds one, shadow's otherwise. passwd_hash says root's passwd
    entry holds the password itself (pre-shadow form)."""

    root_present: bool
    root_locked: bool
    root_empty: bool
    empty_password_accounts: tuple[str, ...]  # accounts (root included) with an empty field
    passwd_hash: bool = False
    shadow_root_locked: bool = True


def judge(text: str, passwd: str | None = None) -> ShadowState:
    found = shadow_entries(text)
    root = lookup(found, "root")
    empty = tuple(e.name for e in found if e.password == "")
    shadow_locked = root is None or is_locked(root.password)
    proot = lookup(passwd_entries(passwd), "root") if passwd is not None else None
    if proot is not None and not shadowed("root", proot.password):
        field = proot.password
        return ShadowState(True, is_locked(field), field == "", empty, True, shadow_locked)
    return ShadowState(
        root_present=root is not None,
        root_locked=root is not None and is_locked(root.password),
        root_empty=root is not None and root.password == "",
        empty_password_accounts=empty,
        shadow_root_locked=shadow_locked,
    )


class ShadowFormatError(ValueError):
    pass


def _splice(text: str, changes: list[tuple[int, int, str]]) -> str:
    if any(a < 0 for a, _, _ in changes):
        raise ShadowFormatError("an entry glibc reads is not where the text has it (an "
                                "indented last line without a newline); fix it by hand")
    for a, b, new in sorted(changes, reverse=True):
        text = text[:a] + new + text[b:]
    return text


def relock(text: str, form: LockForm, lock_empty: bool = False) -> str:
    """`text` (a shadow file) with root's password field locked (and, if lock_empty,
    every empty field locked with '!'); every other byte unchanged. The entry changed is
    the one getspnam("root") returns."""
    found = shadow_entries(text)
    root = lookup(found, "root")
    if root is None:
        raise ShadowFormatError("no root entry in the shadow file")
    changes = [(root.start, root.end, lock_field(root.password, form))]
    if lock_empty:
        changes += [(e.start, e.end, "!") for e in found
                    if e.password == "" and e is not root]
    return _splice(text, changes)


def relock_passwd(text: str, form: LockForm) -> str:
    """`text` (a passwd file) with the password root's entry holds itself locked; an "x"
    (pointing at shadow) is left alone. Every other byte unchanged."""
    root = lookup(passwd_entries(text), "root")
    if root is None or shadowed("root", root.password):
        return text
    return _splice(text, [(root.start, root.end, lock_field(root.password, form))])


def lock_empty_fields(text: str) -> str:
    """`text` (a shadow file) with every empty password field locked with '!'."""
    return _splice(text, [(e.start, e.end, "!") for e in shadow_entries(text)
                          if e.password == ""])
