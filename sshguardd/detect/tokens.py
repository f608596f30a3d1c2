"""The pieces every sshd wording is made of: addresses, ports, sshd's fixed suffixes, the
prefixes syslog and sshd put before a message, and the raw verdict tuple.

Addresses are validated with `ipaddress` rules; IPv4-mapped IPv6 is reduced to IPv4, zone
ids are dropped. Host names (UseDNS yes) are accepted only in DNS syntax with an
alphabetic top-level label, are reported as written and are never resolved.
"""

from __future__ import annotations

import ipaddress
import re

from sshguardd.contracts import Kind

__all__ = [
    "MAX_MESSAGE",
    "PREAUTH",
    "Raw",
    "from_tail",
    "parse_host",
    "port_of",
    "split_prefixes",
    "split_tail",
    "strip_prefixes",
    "user_prefix",
]

# sshd formats into a 1024-byte buffer (log.c MSGBUFSIZ), so anything much longer was not
# written by sshd and is ignored.
MAX_MESSAGE = 2048

# A family parser's verdict before it becomes a contracts.Event: (kind, host, user, port),
# and for sshd's relay of a PAM verdict a fifth item, True (Event.pam_relay). Plain tuples
# keep the hot path cheap; `Event(*raw)` builds the Event.
Raw = tuple[Kind, str, str | None, int | None] | tuple[Kind, str, str | None, int | None, bool]

# ----------------------------------------------------------------------------------------
# Addresses

_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
_IPV4_CHARS = frozenset("0123456789.")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_CACHE_MAX = 1 << 16


def _parse_host(token: str) -> str | None:
    if not token or len(token) > 255:
        return None
    if ":" in token:
        if token[0] == "[" and token[-1] == "]":
            token = token[1:-1]
        zone = token.find("%")
        if zone >= 0:  # link-local zone id (fe80::1%eth0): not part of the address
            token = token[:zone]
        if not _IPV6_CHARS.issuperset(token):
            return None
        try:
            addr = ipaddress.IPv6Address(token)
        except ValueError:
            return None
        mapped = addr.ipv4_mapped
        return str(mapped) if mapped is not None else str(addr)
    if _IPV4_CHARS.issuperset(token):
        # ipaddress.IPv4Address's rules, checked directly (it costs ~20 us per new address,
        # which adds up with tens of thousands of attackers; tests/test_classify.py checks
        # the two agree). Leading zeros ("192.030.0.6") are rejected: inet_aton would read
        # them as octal, so such a token is ambiguous and sshd's getnameinfo never prints one.
        parts = token.split(".")
        if len(parts) != 4:
            return None
        for part in parts:
            if not part or len(part) > 3 or (part[0] == "0" and len(part) > 1) or int(part) > 255:
                return None
        return token
    if len(token) <= 253 and _HOSTNAME.fullmatch(token):
        return token
    return None


class _HostCache(dict[str, "str | None"]):
    """token -> _parse_host(token), bounded. Indexing a missing token parses and stores
    it, so a hit is one C-level dict lookup with no Python frame."""

    def __missing__(self, token: str) -> str | None:
        result = _parse_host(token)
        if len(self) >= _CACHE_MAX:
            self.clear()  # bounded: a flood of distinct tokens cannot grow memory
        self[token] = result
        return result


_CACHE = _HostCache()

#: parse_host(token) -> normalised IP literal, a DNS name as written, or None when the
#: token is neither (malformed addresses are rejected, never guessed at). Memoised and
#: bounded; it is a bound dict method, which makes it the fast entry point for callers
#: that look up an address per line (scan's chunk scanner).
parse_host = _CACHE.__getitem__


def port_of(text: str) -> int | None:
    """A port as sshd prints it (1-5 ASCII digits, at most 65535), or None."""
    if 0 < len(text) <= 5 and text.isascii() and text.isdigit():
        value = int(text)
        return value if value <= 65535 else None
    return None


PREAUTH = " [preauth]"


def split_tail(text: str, proto: bool = False) -> tuple[str, str, int | None, bool]:
    """Split "HEAD ADDR[ port N][ ssh2][ [preauth]]" from the right.

    Returns (head, address token, port, preauth). The address is the last space-free token
    before sshd's own suffixes, so nothing before it (a user name) can move it."""
    preauth = text.endswith(PREAUTH)
    if preauth:
        text = text[: -len(PREAUTH)]
    if proto and text.endswith((" ssh2", " ssh1")):
        text = text[:-5]
    port = None
    i = text.rfind(" port ")
    if i >= 0:
        port = port_of(text[i + 6:])
        if port is not None:
            text = text[:i]
    j = text.rfind(" ")
    if j < 0:
        return "", text, port, preauth
    return text[:j], text[j + 1:], port, preauth


def user_prefix(head: str) -> tuple[str | None, bool] | None:
    """'' -> (None, ok); 'invalid user X' / 'authenticating user X' -> X; 'user X' -> X;
    anything else -> None (not a remote id sshd writes)."""
    if not head:
        return None, True
    for prefix in ("invalid user ", "authenticating user ", "user "):
        if head.startswith(prefix):
            return head[len(prefix):], True
    return None


def from_tail(msg: str, prefix: str, kind: Kind, *, proto: bool = False,
              user_prefixes: tuple[str, ...] = ()) -> Raw | None:
    """'PREFIX USER from ADDR[ port N][ sshN][ [preauth]]' with the address anchored at the end."""
    if not msg.startswith(prefix):
        return None
    head, token, port, _ = split_tail(msg[len(prefix):], proto=proto)
    if head == "from":
        user = None
    elif head.endswith(" from"):
        user = head[:-5]
        for p in user_prefixes:
            if user.startswith(p):
                user = user[len(p):]
                break
    else:
        return None
    host = parse_host(token)
    return (kind, host, user, port) if host else None


# ----------------------------------------------------------------------------------------
# Prefixes

_KERNEL = re.compile(r"kernel: ?\[ *\d+\.\d+\]:? ?")
_PAM = "PAM: "


def split_prefixes(message: str) -> tuple[str, bool]:
    """(the message proper, whether it is sshd's relay of a PAM verdict).

    Drops trailing white space and the prefixes sshd and syslog put before the message
    ("error: ", "fatal: ", Solaris' "[ID n facility.level] ", a kernel timestamp), then
    sshd's "PAM: " (auth-pam.c relays PAM's verdict that way: it corroborates an attempt
    sshd logs itself and is never an attempt of its own, see bans/policy.py)."""
    msg = message.rstrip()
    c = msg[:1]
    if (c == "e" and msg.startswith("error: ")) or (c == "f" and msg.startswith("fatal: ")):
        msg = msg[7:]
    elif c == "[" and msg.startswith("[ID "):
        # Solaris/illumos syslog message id: "[ID 800047 auth.info] "
        i = msg.find("] ")
        if i > 0:
            msg = msg[i + 2:]
    elif c == "k" and msg.startswith("kernel:"):
        m = _KERNEL.match(msg)
        if m:
            msg = msg[m.end():]
    if msg[:5] == _PAM:
        return msg[5:], True
    return msg, False


def strip_prefixes(message: str) -> str:
    """The message proper: split_prefixes without the PAM flag."""
    return split_prefixes(message)[0]
