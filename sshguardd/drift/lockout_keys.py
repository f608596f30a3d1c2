"""authorized_keys lines and sshd's pattern lists, read the way sshd reads them. Pure.

The grammar is OpenSSH 9.2's (sshd(8) "AUTHORIZED_KEYS FILE FORMAT", auth-options.c
`sshauthopt_parse`, authfile.c `sshkey_advance_past_options`, match.c and addrmatch.c),
restated here as facts, not copied:

- a line is `[options] keytype base64 [comment]`; blank lines and lines starting with `#`
  (after leading blanks) are skipped; sshd first tries the line as a bare key and only if
  that fails skips an options field (up to the first blank outside double quotes, `\\"`
  inside quotes is a literal quote; an unterminated quote rejects the line);
- options are comma-separated, names case-insensitive; flag options may be negated with
  `no-` (`pty`, `user-rc`, `port-forwarding`, `agent-forwarding`, `x11-forwarding`,
  `touch-required`, `verify-required`), `restrict` and `cert-authority` may not; valued
  options are `name="value"`; an unknown option, a repeated `command`/`from`/`principals`,
  or a character other than `,` after an option rejects the whole line; `restrict` turns
  pty, forwarding and user-rc off, and a later `pty` turns the pty back on;
- `from=` and `AllowUsers user@host` take a pattern list matched against the client's
  address (CIDR or `*`/`?` wildcards) and host name, `!` negating; a negated match wins.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import ipaddress
import re
import struct
from dataclasses import dataclass, field
from typing import cast

# Key types OpenSSH 9.2 reads (sshkey.c keytypes), certificates included.
PLAIN_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-xmss@openssh.com",
})
CERT_TYPES = frozenset(t.replace("@openssh.com", "") + "-cert-v01@openssh.com"
                       for t in PLAIN_TYPES)
# A key type as an algorithm in PubkeyAcceptedAlgorithms: an RSA key signs with rsa-sha2-*.
ALGORITHMS = {"ssh-rsa": ("ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"),
              "ssh-rsa-cert-v01@openssh.com": ("ssh-rsa-cert-v01@openssh.com",
                                               "rsa-sha2-256-cert-v01@openssh.com",
                                               "rsa-sha2-512-cert-v01@openssh.com")}

_FLAGS = ("restrict", "cert-authority", "port-forwarding", "agent-forwarding",
          "x11-forwarding", "touch-required", "verify-required", "pty", "user-rc")
_NEGATABLE = frozenset(_FLAGS[2:])
_VALUED = ("command", "principals", "from", "expiry-time", "environment", "permitopen",
           "permitlisten", "tunnel")
_ONCE = frozenset({"command", "principals", "from"})


@dataclass(frozen=True, slots=True)
class KeyLine:
    """One key line sshd would use. Only what the lockout guard needs is kept."""

    lineno: int
    keytype: str
    command: str | None = None
    from_: str | None = None
    expiry: float | None = None     # seconds since the epoch, earliest expiry-time
    pty: bool = True
    restricted: bool = False
    cert_authority: bool = False
    options: tuple[str, ...] = field(default=())


class OptionError(ValueError):
    """sshd would reject the line (bad key option)."""


def _advance_past_options(line: str) -> int | None:
    quoted = False
    i = 0
    while i < len(line) and (quoted or line[i] not in " \t"):
        if line[i] == "\\" and line[i + 1:i + 2] == '"':
            i += 1
        elif line[i] == '"':
            quoted = not quoted
        i += 1
    return None if quoted else i


def _read_key(text: str) -> str | None:
    """The key type if `text` starts with `keytype base64`, whose blob names the type."""
    parts = text.split(None, 2)
    if len(parts) < 2:
        return None
    keytype, blob = parts[0], parts[1]
    if keytype not in PLAIN_TYPES and keytype not in CERT_TYPES:
        return None
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 4:
        return None
    (n,) = struct.unpack(">I", raw[:4])
    return keytype if raw[4:4 + n] == keytype.encode() else None


def _dequote(opts: str, i: int) -> tuple[str, int]:
    if i >= len(opts) or opts[i] != '"':
        raise OptionError("missing start quote")
    i += 1
    out = []
    while i < len(opts) and opts[i] != '"':
        if opts[i] == "\\" and opts[i + 1:i + 2] == '"':
            i += 1
        out.append(opts[i])
        i += 1
    if i >= len(opts):
        raise OptionError("missing end quote")
    return "".join(out), i + 1


def parse_time(spec: str) -> float:
    """expiry-time's YYYYMMDD[HHMM[SS]] (UTC with a trailing Z, else local; taken as UTC
    here, which can be off by the zone's offset, hours either way: good enough to tell a
    key that expired years ago)."""
    s = spec[:-1] if spec.endswith(("Z", "z")) else spec
    if not s.isdigit() or len(s) not in (8, 12, 14):
        raise OptionError(f"bad expiry-time {spec!r}")
    y, mo, d = int(s[:4]), int(s[4:6]), int(s[6:8])
    h = int(s[8:10]) if len(s) >= 12 else 0
    mi = int(s[10:12]) if len(s) >= 12 else 0
    sec = int(s[12:14]) if len(s) == 14 else 0
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and sec < 61):
        raise OptionError(f"bad expiry-time {spec!r}")
    return float(calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)))


def parse_options(opts: str) -> dict[str, object]:
    """The options field as sshd's auth-options reads it; raises OptionError where sshd
    would reject the key."""
    st: dict[str, object] = {"pty": True, "restricted": False, "cert_authority": False,
                             "names": []}
    seen: set[str] = set()
    i = 0
    while i < len(opts) and opts[i] not in " \t":
        low = opts[i:].lower()
        name = None
        for flag in _FLAGS:
            negate = flag in _NEGATABLE and low.startswith("no-")
            rest = low[3:] if negate else low
            if rest.startswith(flag):
                name = flag
                i += len(flag) + (3 if negate else 0)
                if flag == "restrict":
                    st["restricted"], st["pty"] = True, False
                elif flag == "cert-authority":
                    st["cert_authority"] = True
                elif flag == "pty":
                    st["pty"] = not negate
                break
        if name is None:
            for opt in _VALUED:
                if low.startswith(opt + "="):
                    name = opt
                    value, i = _dequote(opts, i + len(opt) + 1)
                    if opt in _ONCE and opt in seen:
                        raise OptionError(f'multiple "{opt}" clauses')
                    if opt == "expiry-time":
                        t = parse_time(value)
                        old = st.get("expiry")
                        st["expiry"] = t if not isinstance(old, float) else min(old, t)
                    elif opt in ("command", "from"):
                        st[opt] = value
                    elif opt == "environment" and "=" not in value:
                        raise OptionError("invalid environment string")
                    elif opt == "tunnel" and not value.isdigit() and value != "any":
                        raise OptionError("invalid tunnel")
                    break
        if name is None:
            raise OptionError(f"unsupported option {opts[i:].split(',')[0]!r}")
        seen.add(name)
        cast(list[str], st["names"]).append(name)
        if i >= len(opts) or opts[i] in " \t":
            break
        if opts[i] != ",":
            raise OptionError("unknown key option")
        i += 1
        if i >= len(opts):
            raise OptionError("unexpected end-of-options")
    return st


def parse_line(line: str, lineno: int = 0) -> KeyLine | None:
    """The key on one authorized_keys line, or None when sshd would skip or reject it."""
    text = line.lstrip(" \t")
    if not text or text.startswith(("#", "\n", "\r")):
        return None
    keytype = _read_key(text)
    if keytype is not None:
        return KeyLine(lineno, keytype)
    end = _advance_past_options(text)
    if end is None:
        return None
    keytype = _read_key(text[end:].lstrip(" \t"))
    if keytype is None:
        return None
    try:
        st = parse_options(text[:end])
    except OptionError:
        return None
    expiry, command, from_ = st.get("expiry"), st.get("command"), st.get("from")
    names = cast(list[str], st["names"])
    return KeyLine(lineno, keytype,
                   command=command if isinstance(command, str) else None,
                   from_=from_ if isinstance(from_, str) else None,
                   expiry=expiry if isinstance(expiry, float) else None,
                   pty=bool(st["pty"]), restricted=bool(st["restricted"]),
                   cert_authority=bool(st["cert_authority"]), options=tuple(names))


def parse_keys(text: str) -> list[KeyLine]:
    """Every key line sshd would consider in an authorized_keys text."""
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        k = parse_line(line.rstrip("\r"), n)
        if k is not None:
            out.append(k)
    return out


# ---------------------------------------------------------------------------- patterns

_PATTERNS: dict[str, re.Pattern[str]] = {}


def match_pattern(s: str, pattern: str) -> bool:
    """match.c match_pattern: `*` any run, `?` one character, everything else literal."""
    rx = _PATTERNS.get(pattern)
    if rx is None:
        if len(_PATTERNS) > 1024:
            _PATTERNS.clear()
        rx = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                                for c in pattern), re.DOTALL)
        _PATTERNS[pattern] = rx
    return rx.fullmatch(s) is not None


def _addr_match_list(addr: str, patterns: str) -> int:
    """addrmatch.c addr_match_list: 1 match, 0 none, -1 negated match, -2 bad list."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return 0
    result = 0
    for pat in patterns.split(","):
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        if not pat:
            return -2
        try:
            net = ipaddress.ip_network(pat, strict=True)
            hit = ip.version == net.version and ip in net
        except ValueError:
            if "/" in pat and not any(c in pat for c in "*?"):
                return -2  # a CIDR with host bits set: sshd calls the list invalid
            hit = match_pattern(addr, pat)
        if hit:
            if neg:
                return -1
            result = 1
    return result


def _match_pattern_list(s: str, patterns: str) -> int:
    """match.c match_pattern_list (lower-cased): 1, 0, or -1 for a negated match."""
    s = s.lower()
    got = 0
    for pat in patterns.split(","):
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        if match_pattern(s, pat.lower()):
            if neg:
                return -1
            got = 1
    return got


def match_host_and_ip(host: str, addr: str, patterns: str) -> bool:
    """match.c match_host_and_ip, for `from=` and the @host part of AllowUsers."""
    mip = _addr_match_list(addr, patterns)
    if mip in (-2, -1):
        return False
    mhost = _match_pattern_list(host, patterns)
    if mhost == -1:
        return False
    return bool(mhost or mip)


def match_user(user: str, host: str, addr: str, pattern: str) -> bool:
    """match.c match_user: `USER` or `USER@HOST` (the last @ splits)."""
    if "@" not in pattern:
        return match_pattern(user, pattern)
    upat, _, hpat = pattern.rpartition("@")
    return match_pattern(user, upat) and match_host_and_ip(host, addr, hpat)
