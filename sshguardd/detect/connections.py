"""Families of sshd wordings about connections that failed before authentication:
disconnects and closes in [preauth], "Received disconnect" with the client's reason, bad
identification strings, failed key exchange, LoginGraceTime timeouts, PerSourcePenalties
drops and tcp_wrappers refusals.

Where the client's own text follows the address (disconnect text, offered algorithms),
the address is read right after sshd's fixed prefix; where attacker text is on both
sides ("Change of username"), every position sshd could have written is tried and an
ambiguous message blames nobody.
"""

from __future__ import annotations

from collections.abc import Callable

from sshguardd.contracts import Kind
from sshguardd.detect.tokens import (
    PREAUTH,
    Raw,
    from_tail,
    parse_host,
    port_of,
    split_tail,
    user_prefix,
)

__all__ = ["PARSERS"]

_TOO_MANY = ": Too many authentication failures"
_CHANGE = ": Change of username or service not allowed: ("


def _disconnecting(msg: str) -> Raw | None:
    # packet.c: "Disconnecting %s: %s" where %s is the remote id
    # "[invalid user U |authenticating user U ]ADDR port N" (7.x+).
    if not msg.startswith("Disconnecting "):
        return None  # "Disconnecting: ..." has no address (see orphan_kind)
    rest = msg[14:]
    if rest.endswith(PREAUTH):
        rest = rest[: -len(PREAUTH)]
    if rest.endswith(_TOO_MANY):
        return _remote_id(rest[: -len(_TOO_MANY)], Kind.MAX_AUTH_TRIES)
    # The change-of-username reason quotes both user names, which the attacker chose:
    # accept a position only when the quoted first name equals the logged user.
    found: Raw | None = None
    start = 0
    while True:
        i = rest.find(_CHANGE, start)
        if i < 0:
            break
        start = i + 1
        event = _remote_id(rest[:i], Kind.AUTH_FAILURE)
        if event is None:
            continue
        if not rest.startswith((event[2] or "") + ",", i + len(_CHANGE)):
            continue
        if found is not None and found[1] != event[1]:
            return None
        found = event
    return found


def _remote_id(text: str, kind: Kind) -> Raw | None:
    """'[invalid user U |authenticating user U ]ADDR port N' (packet.c remote id)."""
    head, token, port, _ = split_tail(text)
    if port is None:
        return None
    u = user_prefix(head)
    if u is None:
        return None
    host = parse_host(token)
    return (kind, host, u[0], port) if host else None


# "Connection closed by|reset by [invalid user U |authenticating user U ]ADDR [port N]
# [preauth]", "Disconnected from [invalid user U |authenticating user U |user U ]ADDR
# port N [preauth]": only a close before authentication is a failure; the same lines
# without [preauth] end every normal session.
_CLOSE_PREFIXES = ("Connection closed by ", "Connection reset by ", "Disconnected from ")
_CLOSE_USERS = ("invalid user ", "authenticating user ", "user ")


def _closed(msg: str) -> Raw | None:
    # "Connection closed by|reset by [invalid user U |authenticating user U ]ADDR [port N]
    # [preauth]", "Disconnected from [invalid user U |authenticating user U |user U ]ADDR
    # port N [preauth]": only a close before authentication is a failure; the same lines
    # without [preauth] end every normal session. Read from the right: sshd's suffix, then
    # the last token is the address, whatever the user name before it contains.
    if not msg.endswith(PREAUTH):
        return None
    body = msg[:-10]
    port = None
    j = body.rfind(" port ")
    if j >= 0:
        p = body[j + 6:]
        if 0 < len(p) <= 5 and p.isdigit() and p.isascii():
            port = int(p)
            if port > 65535:
                return None
            body = body[:j]
    k = body.rfind(" ")
    for prefix in _CLOSE_PREFIXES:
        if body.startswith(prefix):
            break
    else:
        return None
    n = len(prefix)
    if k < n - 1:
        return None
    token = body[k + 1:]
    user = None
    if k >= n:  # something between the prefix and the address: "<kind> user U "
        head = body[n:k + 1]
        for u in _CLOSE_USERS:
            if head.startswith(u):
                user = head[len(u):-1]
                break
        else:
            return None
    host = parse_host(token)
    if host is None:
        return None
    return (Kind.PREAUTH_DISCONNECT, host, user, port)


_disconnected = _closed


def _received(msg: str) -> Raw | None:
    # "Received disconnect from ADDR port N:CODE: TEXT" (7.x+) or "... from ADDR: CODE: TEXT".
    # TEXT is the client's: the address is read right after the fixed prefix, and the first
    # ": " (which no address contains) ends sshd's part.
    if not msg.startswith("Received disconnect from "):
        return None
    rest = msg[25:]
    i = rest.find(": ")
    if i < 0:
        return None
    head, text = rest[:i], rest[i + 2:]
    port = None
    if " port " in head:
        token, _, pc = head.partition(" port ")
        p, sep, code = pc.partition(":")
        port = port_of(p)
        if port is None or not sep:
            return None
    else:
        token = head
        code, sep, text = text.partition(": ")
        if not sep:
            return None
    code = code.strip()
    host = parse_host(token)
    if host is None:
        return None
    # 3 = SSH2_DISCONNECT_AUTH_FAILED-ish client messages ("Auth fail" from JSch) and 14 =
    # SSH2_DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE cannot follow a successful login.
    if code == "3" and "Auth fail" in text:
        return (Kind.AUTH_FAILURE, host, None, port)
    if code == "14" and text.startswith(("No supported authentication methods available",
                                         "No authentication methods available")):
        return (Kind.AUTH_FAILURE, host, None, port)
    if text.endswith(PREAUTH):
        return (Kind.PREAUTH_DISCONNECT, host, None, port)
    return None


def _did_not(msg: str) -> Raw | None:
    # "Did not receive identification string from ADDR[ port N]"
    return from_tail(msg, "Did not receive identification string ", Kind.PROTOCOL_ERROR)


def _bad(msg: str) -> Raw | None:
    # "Bad protocol version identification '%.100s' from ADDR[ port N]": the quoted text is
    # the client's, before the address, so the address is anchored at the end.
    if not msg.startswith("Bad protocol version identification "):
        return None
    head, token, port, _ = split_tail(msg)
    if not head.endswith(" from"):
        return None
    host = parse_host(token)
    return (Kind.PROTOCOL_ERROR, host, None, port) if host else None


def _left_addr_port(rest: str) -> tuple[str, int | None, str] | None:
    """'ADDR[ port N]: REST' read from the left (no address contains ': ')."""
    i = rest.find(": ")
    if i < 0:
        return None
    head = rest[:i]
    port = None
    token, sep, p = head.partition(" port ")
    if sep:
        port = port_of(p)
        if port is None:
            return None
    elif " " in head:
        return None
    host = parse_host(token)
    return (host, port, rest[i + 2:]) if host else None


def _unable(msg: str) -> Raw | None:
    # packet.c sshpkt_fatal: "Unable to negotiate with ADDR port N: no matching %s found.
    # Their offer: %s" (the offer is the client's)
    if not msg.startswith("Unable to negotiate with "):
        return None
    r = _left_addr_port(msg[25:])
    if r is None or not r[2].startswith("no matching "):
        return None
    return (Kind.KEX_FAILURE, r[0], None, r[1])


def _banner(msg: str) -> Raw | None:
    # packet.c sshpkt_fatal with tag: "banner exchange: Connection from ADDR port N: %s"
    if not msg.startswith("banner exchange: Connection from "):
        return None
    r = _left_addr_port(msg[33:])
    return (Kind.PROTOCOL_ERROR, r[0], None, r[1]) if r else None


def _dispatch_fatal(msg: str) -> Raw | None:
    # "ssh_dispatch_run_fatal: Connection from [invalid user U |authenticating user U ]ADDR
    # port N: <ssh_err text> [preauth]". Only before authentication is it the client's doing.
    if not msg.startswith("ssh_dispatch_run_fatal: Connection from ") or not msg.endswith(PREAUTH):
        return None
    rest = msg[40:]
    i = rest.rfind(" port ")  # ssh_err() texts never contain " port "
    if i < 0:
        return None
    p, sep, _ = rest[i + 6:].partition(": ")
    port = port_of(p)
    if port is None or not sep:
        return None
    head, _, token = rest[:i].rpartition(" ")
    if user_prefix(head) is None:
        return None
    host = parse_host(token)
    return (Kind.PROTOCOL_ERROR, host, None, port) if host else None


def _timeout(msg: str) -> Raw | None:
    # sshd.c grace_alarm_handler: "Timeout before authentication for ADDR port N" (7.x-9.7)
    # sshd-session (9.8+): "Timeout before authentication for connection from ADDR to ADDR, pid = N"
    if not msg.startswith("Timeout before authentication for "):
        return None
    rest = msg[34:]
    if rest.startswith("connection from "):
        token, sep, _ = rest[16:].partition(" to ")
        if not sep:
            return None
        host = parse_host(token)
        return (Kind.TIMEOUT, host, None, None) if host else None
    token, _, p = rest.partition(" port ")
    host = parse_host(token)
    return (Kind.TIMEOUT, host, None, port_of(p)) if host else None


def _drop(msg: str) -> Raw | None:
    # srclimit.c (9.8+): "drop connection #N from [ADDR]:PORT on [ADDR]:PORT penalty: REASON".
    # "... past MaxStartups" is sshd shedding load at random, not this source's fault.
    if not msg.startswith("drop connection #"):
        return None
    i = msg.find(" from [", 17)
    if i < 0 or not msg[17:i].isdigit():
        return None
    j = msg.find("]:", i + 7)
    if j < 0:
        return None
    host = parse_host(msg[i + 7:j])
    p, sep, rest = msg[j + 2:].partition(" on [")
    if host is None or not sep or " penalty: " not in rest:
        return None
    return (Kind.PENALTY, host, None, port_of(p))


def _refused(msg: str) -> Raw | None:
    # libwrap (tcp_wrappers): "refused connect from NAME (ADDR)" - access refused for the host.
    if not msg.startswith("refused connect from ") or not msg.endswith(")"):
        return None
    i = msg.rfind(" (")
    if i < 0:
        return None
    host = parse_host(msg[i + 2:-1])
    return (Kind.USER_NOT_ALLOWED, host, None, None) if host else None


# First word of the message -> its parser (see families.PARSERS).
PARSERS: dict[str, Callable[[str], Raw | None]] = {
    "Disconnecting": _disconnecting,
    "Connection": _closed,
    "Disconnected": _disconnected,
    "Received": _received,
    "Did": _did_not,
    "Bad": _bad,
    "Unable": _unable,
    "banner": _banner,
    "ssh_dispatch_run_fatal:": _dispatch_fatal,
    "Timeout": _timeout,
    "drop": _drop,
    "refused": _refused,
}
