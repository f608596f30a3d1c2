"""The sshd message classifier: one message in, one `contracts.Event` (or None) out.

Pure: no I/O, no clock, no global mutable state except a bounded memo of validated
addresses. `classify(message)` is what the daemon calls for every sshd journal entry;
`Correlator` adds the per-connection memory that a few old, address-less wordings need
(fail2ban's multi-line matches), keyed by the logging host and sshd's process id.

How blame is placed (the invariant every family below keeps):
- The address is read only from the position where sshd's format string puts it. Text an
  attacker controls (user names, the client's disconnect text, its identification string,
  key or certificate details) is never searched for an address. Where the attacker's text
  comes *before* the address (user names), the address is anchored at the end of the
  message; where it comes *after* (disconnect text, offered algorithms), the address is
  read right after sshd's fixed prefix.
- Where a format has attacker text on both sides (publickey/hostbased failures with key
  details, "Change of username" disconnects) every position sshd could have produced is
  tried, and if more than one different address fits, nobody is blamed: the attacker can
  hide one of their own lines but can never get someone else banned.
- Addresses are validated with `ipaddress`; IPv4-mapped IPv6 is reduced to IPv4, zone ids
  are dropped. Host names (UseDNS yes) are accepted only in DNS syntax with an alphabetic
  top-level label, are reported as written and are never resolved.
- Messages longer than MAX_MESSAGE are ignored: sshd formats into a 1024-byte buffer
  (log.c MSGBUFSIZ), so anything longer was not written by sshd.

Sources of the wordings: OpenSSH's auth.c/auth2.c/sshd.c/packet.c format strings as seen
in logs (7.x to 9.9, sshd and sshd-session), fail2ban's filter.d/sshd.conf (all modes) and
SSHGuard's attack_scanner.l grammar. tests/data/sshd_golden.tsv has one line per wording.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Callable

from sshguardd.contracts import Event, Kind

__all__ = ["MAX_MESSAGE", "classify", "parse_host", "orphan_kind", "Correlator",
           "FAMILIES", "CORRELATED_WORDS", "ENDING_WORDS", "ENDINGS",
           "strip_prefixes"]

MAX_MESSAGE = 2048

# A family parser's verdict before it becomes a contracts.Event: (kind, host, user, port).
# Plain tuples keep the hot path cheap; classify() and Correlator.feed() build the Events.
Raw = tuple[Kind, str, "str | None", "int | None"]

# ----------------------------------------------------------------------------------------
# Addresses

_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
_IPV4_CHARS = frozenset("0123456789.")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_memo: dict[str, str | None] = {}
_MISS = object()
_MEMO_MAX = 1 << 16


def parse_host(token: str) -> str | None:
    """A host token as sshd logs it -> normalised IP literal, a DNS name as written, or
    None when it is neither (malformed addresses are rejected, never guessed at)."""
    try:
        return _memo[token]
    except KeyError:
        pass
    result = _parse_host(token)
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()  # bounded: a flood of distinct tokens cannot grow memory
    _memo[token] = result
    return result


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


def _port(text: str) -> int | None:
    if 0 < len(text) <= 5 and text.isascii() and text.isdigit():
        value = int(text)
        return value if value <= 65535 else None
    return None


_PREAUTH = " [preauth]"


def _tail(text: str, proto: bool = False) -> tuple[str, str, int | None, bool]:
    """Split "HEAD ADDR[ port N][ ssh2][ [preauth]]" from the right.

    Returns (head, address token, port, preauth). The address is the last space-free token
    before sshd's own suffixes, so nothing before it (a user name) can move it."""
    preauth = text.endswith(_PREAUTH)
    if preauth:
        text = text[: -len(_PREAUTH)]
    if proto and text.endswith((" ssh2", " ssh1")):
        text = text[:-5]
    port = None
    i = text.rfind(" port ")
    if i >= 0:
        port = _port(text[i + 6:])
        if port is not None:
            text = text[:i]
    j = text.rfind(" ")
    if j < 0:
        return "", text, port, preauth
    return text[:j], text[j + 1:], port, preauth


def _user_prefix(head: str) -> tuple[str | None, bool] | None:
    """'' -> (None, ok); 'invalid user X' / 'authenticating user X' -> X; 'user X' -> X."""
    if not head:
        return None, True
    for prefix in ("invalid user ", "authenticating user ", "user "):
        if head.startswith(prefix):
            return head[len(prefix):], True
    return None


# ----------------------------------------------------------------------------------------
# Families, dispatched on the message's first word (a dict lookup before any parsing)


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
        host = _memo.get(token, _MISS)  # parse_host's memo, inlined (hot path)
        if host is _MISS:
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
    head, token, port, preauth = _tail(text, proto=True)
    if preauth or not head.endswith(" from"):
        return None
    host = parse_host(token)
    if host is None:
        return None
    return _auth_user(head[:-5]), host, port


def _from_tail(msg: str, prefix: str, kind: Kind, *, proto: bool = False,
               user_prefixes: tuple[str, ...] = ()) -> Raw | None:
    """'PREFIX USER from ADDR[ port N][ sshN][ [preauth]]' with the address anchored at the end."""
    if not msg.startswith(prefix):
        return None
    head, token, port, _ = _tail(msg[len(prefix):], proto=proto)
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
    host = _memo.get(token, _MISS)  # parse_host's memo, inlined (hot path)
    if host is _MISS:
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
        return _from_tail(msg, "User not known to the underlying authentication module for ",
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
    head, token, port, _ = _tail(msg[19:])
    if head != "FROM":
        return None
    host = parse_host(token)
    return (Kind.ROOT_REFUSED, host, "root", port) if host else None


def _maximum(msg: str) -> Raw | None:
    # auth.c auth_maxtries_exceeded: "maximum authentication attempts exceeded for
    # [invalid user ]USER from ADDR port N ssh2"
    return _from_tail(msg, "maximum authentication attempts exceeded for ", Kind.MAX_AUTH_TRIES,
                      proto=True, user_prefixes=("invalid user ",))


_TOO_MANY = ": Too many authentication failures"
_CHANGE = ": Change of username or service not allowed: ("


def _disconnecting(msg: str) -> Raw | None:
    # packet.c: "Disconnecting %s: %s" where %s is the remote id
    # "[invalid user U |authenticating user U ]ADDR port N" (7.x+).
    if not msg.startswith("Disconnecting "):
        return None  # "Disconnecting: ..." has no address (see orphan_kind)
    rest = msg[14:]
    if rest.endswith(_PREAUTH):
        rest = rest[: -len(_PREAUTH)]
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
    head, token, port, _ = _tail(text)
    if port is None:
        return None
    u = _user_prefix(head)
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
    if not msg.endswith(_PREAUTH):
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
    host = _memo.get(token, _MISS)  # parse_host's memo, inlined (hot path)
    if host is _MISS:
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
        port = _port(p)
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
    if text.endswith(_PREAUTH):
        return (Kind.PREAUTH_DISCONNECT, host, None, port)
    return None


def _did_not(msg: str) -> Raw | None:
    # "Did not receive identification string from ADDR[ port N]"
    return _from_tail(msg, "Did not receive identification string ", Kind.PROTOCOL_ERROR)


def _bad(msg: str) -> Raw | None:
    # "Bad protocol version identification '%.100s' from ADDR[ port N]": the quoted text is
    # the client's, before the address, so the address is anchored at the end.
    if not msg.startswith("Bad protocol version identification "):
        return None
    head, token, port, _ = _tail(msg)
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
        port = _port(p)
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
    if not msg.startswith("ssh_dispatch_run_fatal: Connection from ") or not msg.endswith(_PREAUTH):
        return None
    rest = msg[40:]
    i = rest.rfind(" port ")  # ssh_err() texts never contain " port "
    if i < 0:
        return None
    p, sep, _ = rest[i + 6:].partition(": ")
    port = _port(p)
    if port is None or not sep:
        return None
    head, _, token = rest[:i].rpartition(" ")
    if _user_prefix(head) is None:
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
    return (Kind.TIMEOUT, host, None, _port(p)) if host else None


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
    return (Kind.PENALTY, host, None, _port(p))


def _refused(msg: str) -> Raw | None:
    # libwrap (tcp_wrappers): "refused connect from NAME (ADDR)" - access refused for the host.
    if not msg.startswith("refused connect from ") or not msg.endswith(")"):
        return None
    i = msg.rfind(" (")
    if i < 0:
        return None
    host = parse_host(msg[i + 2:-1])
    return (Kind.USER_NOT_ALLOWED, host, None, None) if host else None


def _pam_auth(msg: str) -> Raw | None:
    # "error: PAM: Authentication failure|error for [illegal user ]USER from HOST[ via LOCAL]"
    # (sshd-pam / macOS); "authentication failed" in other ports.
    for verb in ("failure for ", "error for ", "failed for "):
        if msg.startswith(verb, 15):
            break
    else:
        return None
    prefix = msg[: 15 + len(verb)]
    event = _from_tail(msg, prefix, Kind.AUTH_FAILURE, user_prefixes=("illegal user ", "invalid user "))
    if event is None:
        i = msg.rfind(" via ")  # " via LOCALADDR" follows the host on macOS
        if i > 0 and parse_host(msg[i + 5:]) is not None:
            event = _from_tail(msg[:i], prefix, Kind.AUTH_FAILURE,
                               user_prefixes=("illegal user ", "invalid user "))
    return event


def _unknown(msg: str) -> Raw | None:
    # "error: PAM: unknown user for illegal user USER from ADDR"
    return _from_tail(msg, "unknown user for ", Kind.INVALID_USER,
                      user_prefixes=("illegal user ", "invalid user "))


FAMILIES: dict[str, Callable[[str], Raw | None]] = {
    "Failed": _auth_log,
    "Accepted": _auth_log,
    "Invalid": _invalid_user,
    "Illegal": _invalid_user,
    "User": _user,
    "ROOT": _root,
    "maximum": _maximum,
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
    "Authentication": _pam_auth,
    "authentication": _pam_auth,
    "unknown": _unknown,
}

_KERNEL = re.compile(r"kernel: ?\[ *\d+\.\d+\]:? ?")


def strip_prefixes(message: str) -> str:
    """Drop the prefixes sshd and syslog put before the message proper."""
    msg = message.rstrip()
    c = msg[:1]
    if c == "e" and msg.startswith("error: "):
        msg = msg[7:]
    elif c == "f" and msg.startswith("fatal: "):
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
    if msg[:5] == "PAM: ":
        msg = msg[5:]
    return msg


def classify(message: str) -> Event | None:
    """Classify one sshd message (without the syslog prefix).

    Returns an Event for a failure (kind is a failure Kind) or a successful login
    (Kind.ACCEPTED), or None for anything else. Never raises on any input; time is
    bounded because every family is a constant number of str scans over a capped length.
    """
    if len(message) > MAX_MESSAGE:
        return None
    raw = _classify(strip_prefixes(message))
    return Event(*raw) if raw is not None else None


def _classify(msg: str) -> Raw | None:
    sp = msg.find(" ")
    family = FAMILIES.get(msg[:sp] if sp > 0 else msg)
    return family(msg) if family is not None else None


# ----------------------------------------------------------------------------------------
# Address-less wordings and the per-connection memory they need

_ORPHANS: tuple[tuple[str, Kind], ...] = (
    ("Disconnecting: Too many authentication failures", Kind.MAX_AUTH_TRIES),
    ("Disconnecting: Change of username or service not allowed", Kind.AUTH_FAILURE),
    ("kex_exchange_identification: client sent invalid protocol identifier", Kind.PROTOCOL_ERROR),
    ("kex_exchange_identification: Connection closed by remote host", Kind.PROTOCOL_ERROR),
    ("kex_exchange_identification: read: Connection reset by peer", Kind.PROTOCOL_ERROR),
    ("kex_exchange_identification: Connection reset by peer", Kind.PROTOCOL_ERROR),
    ("Unable to negotiate a ", Kind.KEX_FAILURE),
    ("no matching ", Kind.KEX_FAILURE),
    ("Read from socket failed: Connection reset by peer", Kind.PREAUTH_DISCONNECT),
)


def orphan_kind(message: str) -> Kind | None:
    """The failure Kind of an sshd message that names no address (old OpenSSH wordings,
    kex_exchange_identification errors), or None. The address comes from other lines of
    the same sshd process: see Correlator."""
    if len(message) > MAX_MESSAGE:
        return None
    return _orphan(strip_prefixes(message))


_ORPHAN_WORDS = frozenset(prefix.split(" ", 1)[0] for prefix, _ in _ORPHANS) | {"User"}


def _orphan(msg: str) -> Kind | None:
    if msg.partition(" ")[0] not in _ORPHAN_WORDS:
        return None
    for prefix, kind in _ORPHANS:
        if msg.startswith(prefix):
            if prefix == "no matching " and " found" not in msg:
                return None
            return kind
    if msg.startswith("User ") and " from " not in msg and (
            msg.endswith(" not allowed because account is locked")
            or " not allowed because shell " in msg):
        return Kind.USER_NOT_ALLOWED
    return None


_ANNOUNCE_WORDS = frozenset({"Connection", "SSH:"})


def _announced_host(msg: str) -> str | None:
    """The peer address of a line that only announces a connection (LogLevel VERBOSE
    "Connection from ADDR port N on ADDR port N", or the gh-864 "SSH: Server;..." lines)."""
    if msg.startswith("Connection from "):
        token = msg[16:].split(" ", 1)[0]
        return parse_host(token)
    if msg.startswith("SSH: Server;Ltype: "):
        i = msg.find(";Remote: ")
        if i > 0:
            token = msg[i + 9:].split(";", 1)[0].rpartition("-")[0]
            return parse_host(token)
    return None


ENDINGS = ("Connection closed by ", "Connection reset by ", "Disconnected from ",
            "Received disconnect from ")
ENDING_WORDS = frozenset({"Connection", "Disconnected", "Received"})
# First words of the lines the Correlator must look at even when classify() says nothing.
CORRELATED_WORDS = frozenset({
    "Connection", "Disconnected", "Received", "SSH:", "Disconnecting:",
    "kex_exchange_identification:", "Unable", "no", "Read", "User",
})


def _closing_host(msg: str) -> str | None:
    """The peer named by a closing line, with or without [preauth]."""
    for prefix in ENDINGS[:3]:
        if msg.startswith(prefix):
            head, token, _, _ = _tail(msg[len(prefix):])
            return parse_host(token) if _user_prefix(head) is not None else None
    return None


class Correlator:
    """classify() plus memory per sshd process, for messages that carry no address.

    Keyed by (logging host, pid). An address learnt from one line of a connection is lent
    to that connection's address-less failures; a failure seen before any address waits
    for the connection's next line that names one. Entries are dropped when the
    connection's closing line is seen, after `ttl` seconds of the entries' own time (pid
    reuse), and beyond `max_entries` (oldest first), so memory is bounded.
    """

    def __init__(self, max_entries: int = 4096, ttl: float = 600.0):
        self.max_entries = max_entries
        self.ttl = ttl
        # key -> [host or None, pending kinds or None, last time]; insertion order = age.
        # An OrderedDict because evicting the oldest is O(1) there (popitem(last=False)),
        # while next(iter(dict)) walks over every slot freed since the dict last resized:
        # with thousands of short connections between evictions, that cost dominated scan.
        self._conns: OrderedDict[tuple[str | None, int], list] = OrderedDict()

    def feed(self, message: str, pid: int | None, machine: str | None = None,
             time: float | None = None) -> list[Event]:
        """Events for one message of sshd process `pid` on `machine`, at entry time `time`.

        Every event classify() gives is returned; address-less failures are returned once
        the connection's address is known (possibly on a later line)."""
        return [Event(*raw) for raw in self.feed_raw(message, pid, machine, time)]

    def feed_raw(self, message: str, pid: int | None, machine: str | None = None,
                 time: float | None = None) -> list[Raw]:
        """feed() with raw (kind, host, user, port) verdicts instead of Events."""
        if len(message) > MAX_MESSAGE:
            return []
        msg = strip_prefixes(message)
        sp = msg.find(" ")
        first = msg[:sp] if sp > 0 else msg
        family = FAMILIES.get(first)
        event = family(msg) if family is not None else None
        if pid is None:
            return [event] if event is not None else []
        if event is None and first not in CORRELATED_WORDS:
            return []  # the common case (pam_unix, session lines): nothing to learn
        return self.correlate(msg, first, event, pid, machine, time)

    def correlate(self, msg: str, first: str, event: Raw | None, pid: int,
                  machine: str | None, time: float | None) -> list[Raw]:
        """The bookkeeping half of feed(), for callers that classified a stripped message
        themselves with FAMILIES (scan's fused loop): `first` is its first word, `event`
        the family's raw verdict (kind, host, user, port). Returns raw verdicts. Only
        needed when event is not None or first is in CORRELATED_WORDS."""
        key = (machine, pid)
        conns = self._conns
        entry = conns.get(key)
        if entry is not None and time is not None and entry[2] is not None \
                and time - entry[2] > self.ttl:
            del conns[key]  # a stale entry: the pid has been reused
            entry = None
        ending = first in ENDING_WORDS and msg.startswith(ENDINGS)
        if event is not None:
            if entry is None:
                if not ending:  # inline _remember: this is the hot path
                    conns[key] = [event[1], None, time]
                    if len(conns) > self.max_entries:
                        conns.popitem(last=False)
                return [event]
            host: str | None = event[1]
            out = [event]
        else:
            out = []
            host = _announced_host(msg) if first in _ANNOUNCE_WORDS else None
            if host is None:
                kind = _orphan(msg) if first in _ORPHAN_WORDS else None
                if kind is not None:
                    if entry is not None and entry[0] is not None:
                        out.append((kind, entry[0], None, None))
                        entry[2] = time
                    else:
                        if entry is None:
                            entry = self._remember(key, None, time)
                        if entry[1] is None:
                            entry[1] = []
                        entry[1].append(kind)
                    return out
                if entry is None:
                    return out
                if entry[1]:
                    host = _closing_host(msg)  # gh-3086: a close without [preauth]
                if host is None:
                    if ending:
                        del conns[key]
                    return out
        if entry is None:
            entry = self._remember(key, host, time)
        else:
            entry[0] = host
            entry[2] = time
        if entry[1]:
            out.extend((kind, host, None, None) for kind in entry[1])
            entry[1] = None
        if ending:
            del conns[key]  # the connection is over: its pid may be reused
        return out

    def _remember(self, key: tuple[str | None, int], host: str | None, time: float | None) -> list:
        entry = [host, None, time]  # host, pending kinds (None: none), last time
        self._conns[key] = entry
        while len(self._conns) > self.max_entries:
            self._conns.popitem(last=False)  # the oldest
        return entry

    def __len__(self) -> int:
        return len(self._conns)
