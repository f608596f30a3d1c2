"""Families of sshd wordings about authentication attempts and refused users: auth.c's
result lines (Failed/Accepted METHOD for USER from ADDR), "Invalid user", AllowUsers-style
refusals, MaxAuthTries, and PAM's relayed failures.

Each parser takes the message proper (after tokens.split_prefixes) and returns a raw
verdict or None. User names are the attacker's text and come before the address, so the
address is anchored at the end of the message (see detect/__init__ for the rule).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sshguardd.contracts import Kind
from sshguardd.detect.tokens import Raw, from_tail, parse_host, split_tail

__all__ = ["PARSERS"]

# Methods whose result line never carries ": EXTRA" (only publickey and hostbased do, and
# SSH1's rsa/rhosts-rsa did): for these the address is simply the one at the end.
_EXTRA_METHODS = ("publickey", "hostbased", "rsa", "rhosts-rsa")
# What follows " from " in the end-anchored auth_log form. It contains no " from ", so
# only the last " from " of the message can be followed by it: rfind finds the address
# without any backtracking over the user name.
_AUTH_TAIL = re.compile(r"([^ ]++)(?: port (\d{1,5}))?(?: ssh[12])?")


def _auth_log(msg: str) -> Raw | None:
    # auth.c: "%s %s%s%s for %s%.100s from %.200s port %d ssh2%s%s"
    #   (Failed|Accepted|Postponed|Partial) method[/submethod] for [invalid user ]USER
    #   from ADDR port N ssh2[: EXTRA]. EXTRA exists only for publickey and hostbased.
    verdict, _, rest = msg.partition(" ")
    method, sep, rest = rest.partition(" for ")
    if not sep or " " in method:
        return None
    if verdict == "Accepted":
        kind = Kind.ACCEPTED
    elif verdict != "Failed":
        return None  # Postponed/Partial: not an outcome
    elif method == "password":
        kind = Kind.BAD_PASSWORD
    elif method.startswith("publickey"):
        kind = Kind.BAD_KEY
    else:
        kind = Kind.AUTH_FAILURE
    if not method.startswith(_EXTRA_METHODS):
        i = rest.rfind(" from ")
        if i < 0:
            return None
        m = _AUTH_TAIL.fullmatch(rest, i + 6)
        if m is None:
            return None
        token, port_text = m.groups()
        host = parse_host(token)
        if host is None:
            return None
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                return None
        return (kind, host, _auth_user(rest[:i]), port)
    candidates: list[tuple[str | None, str, int | None]] = []
    # The end-anchored form: no EXTRA.
    parsed = _auth_head(rest)
    if parsed is not None:
        candidates.append(parsed)
    check = _hostbased_extra if method.startswith("hostbased") else _pubkey_extra
    start = 0
    while True:
        # EXTRA always follows sshd's " ssh2" (" ssh1" before 7.4).
        i = rest.find(": ", start)
        if i < 0:
            break
        start = i + 2
        if rest[i - 5:i] not in (" ssh2", " ssh1") or not check(rest[i + 2:]):
            continue
        parsed = _auth_head(rest[:i])
        if parsed is not None:
            candidates.append(parsed)
    if not candidates:
        return None
    user, host, port = candidates[-1]
    for c in candidates:
        if c[1] != host:
            return None  # attacker text on both sides made it ambiguous: blame nobody
    return (kind, host, user, port)


def _auth_user(user: str) -> str | None:
    if user.startswith(("invalid user ", "illegal user ")):
        return user[13:]
    if user == "<invalid username>":  # Solaris/macOS placeholder
        return None
    return user


_SERIAL = re.compile(r" \(serial \d+\) CA [^ ]+ [^ ]+")


def _pubkey_extra(extra: str) -> bool:
    """auth2-pubkey.c: "TYPE FP", or for certificates "TYPE-CERT FP ID KEYID (serial N) CA
    TYPE FP" (old releases logged MD5 hex fingerprints). Linear: no backtracking regex."""
    n = extra.count(" ")
    if n == 1:
        return extra[0] != " " and extra[-1] != " "
    kind, _, rest = extra.partition(" ")
    if not kind.endswith("-CERT") or " ID " not in rest:
        return False
    i = rest.rfind(" (serial ")
    return i > 0 and _SERIAL.fullmatch(rest, i) is not None


def _hostbased_extra(extra: str) -> bool:
    """auth2-hostbased.c: 'TYPE FP, client user "U", client host "H"'."""
    i = extra.find(', client user "')
    if i < 0 or extra[:i].count(" ") != 1 or not extra.endswith('"'):
        return False
    return extra.rfind('", client host "') > i


def _auth_head(text: str) -> tuple[str | None, str, int | None] | None:
    """'[invalid user ]USER from ADDR[ port N][ sshN]' -> (user, host, port)."""
    head, token, port, preauth = split_tail(text, proto=True)
    if preauth or not head.endswith(" from"):
        return None
    host = parse_host(token)
    if host is None:
        return None
    return _auth_user(head[:-5]), host, port


# What follows " from " in "Invalid user USER from ADDR[ port N]": it contains no
# " from ", so the last " from " is the one sshd wrote, whatever the user name holds.
_INVALID_TAIL = re.compile(r"([^ ]++)(?: port (\d{1,5}))?(?: \[preauth\])?")


def _invalid_user(msg: str) -> Raw | None:
    # "Invalid user USER from ADDR[ port N]" (old: "Illegal user"); USER may be empty
    # ("Invalid user  from A", or "Invalid user from A").
    if not msg.startswith(("Invalid user ", "Illegal user ", "invalid user ", "illegal user ")):
        return None
    i = msg.rfind(" from ")
    if i < 12:
        return None
    m = _INVALID_TAIL.fullmatch(msg, i + 6)
    if m is None:
        return None
    token, port_text = m.groups()
    host = parse_host(token)
    if host is None:
        return None
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            return None
    return (Kind.INVALID_USER, host, msg[13:i] if i > 13 else "", port)


_NOT_ALLOWED_REASONS = (
    "not listed in AllowUsers", "listed in DenyUsers", "not in any group",
    "a group is listed in DenyGroups", "none of user's groups are listed in AllowGroups",
    "shell ", "not in AllowUsers", "in DenyUsers",
)


def _user(msg: str) -> Raw | None:
    if msg.startswith("User not known to the underlying authentication module for "):
        return from_tail(msg, "User not known to the underlying authentication module for ",
                         Kind.INVALID_USER, user_prefixes=("illegal user ", "invalid user "))
    # "User %.100s from %.100s not allowed because %s" (auth.c allowed_user); the user is a
    # real account name here, the reason is sshd's text.
    i = msg.rfind(" not allowed because ")
    if i < 0 or not msg.startswith("User "):
        return None
    if not msg.startswith(_NOT_ALLOWED_REASONS, i + 21):
        return None
    head, sep, token = msg[5:i].rpartition(" from ")
    if not sep:
        return None
    host = parse_host(token)
    return (Kind.USER_NOT_ALLOWED, host, head, None) if host else None


def _root(msg: str) -> Raw | None:
    # "ROOT LOGIN REFUSED FROM ADDR[ port N][ [preauth]]" (old releases, PermitRootLogin no)
    if not msg.startswith("ROOT LOGIN REFUSED FROM "):
        return None
    head, token, port, _ = split_tail(msg[19:])
    if head != "FROM":
        return None
    host = parse_host(token)
    return (Kind.ROOT_REFUSED, host, "root", port) if host else None


def _maximum(msg: str) -> Raw | None:
    # auth.c auth_maxtries_exceeded: "maximum authentication attempts exceeded for
    # [invalid user ]USER from ADDR port N ssh2"
    return from_tail(msg, "maximum authentication attempts exceeded for ", Kind.MAX_AUTH_TRIES,
                     proto=True, user_prefixes=("invalid user ",))



def _pam_auth(msg: str) -> Raw | None:
    # "error: PAM: Authentication failure|error for [illegal user ]USER from HOST[ via LOCAL]"
    # (sshd-pam / macOS); "authentication failed" in other ports.
    for verb in ("failure for ", "error for ", "failed for "):
        if msg.startswith(verb, 15):
            break
    else:
        return None
    prefix = msg[: 15 + len(verb)]
    event = from_tail(msg, prefix, Kind.AUTH_FAILURE,
                      user_prefixes=("illegal user ", "invalid user "))
    if event is None:
        i = msg.rfind(" via ")  # " via LOCALADDR" follows the host on macOS
        if i > 0 and parse_host(msg[i + 5:]) is not None:
            event = from_tail(msg[:i], prefix, Kind.AUTH_FAILURE,
                              user_prefixes=("illegal user ", "invalid user "))
    return event


def _unknown(msg: str) -> Raw | None:
    # "error: PAM: unknown user for illegal user USER from ADDR"
    return from_tail(msg, "unknown user for ", Kind.INVALID_USER,
                     user_prefixes=("illegal user ", "invalid user "))


# First word of the message -> its parser (see families.PARSERS).
PARSERS: dict[str, Callable[[str], Raw | None]] = {
    "Failed": _auth_log,
    "Accepted": _auth_log,
    "Invalid": _invalid_user,
    "Illegal": _invalid_user,
    "User": _user,
    "ROOT": _root,
    "maximum": _maximum,
    "Authentication": _pam_auth,
    "authentication": _pam_auth,
    "unknown": _unknown,
}
