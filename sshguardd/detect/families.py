"""Dispatch on the message's first word: one dict lookup before any parsing.

`classify(message)` is what the daemon's correlator and the tests call; `verdict(msg)` is
the same for a message already split from its prefixes (tokens.split_prefixes), for
callers that classify millions of lines and have done that split themselves (scan).
"""

from __future__ import annotations

from collections.abc import Callable

from sshguardd.contracts import Event
from sshguardd.detect import attempts, connections
from sshguardd.detect.tokens import MAX_MESSAGE, Raw, split_prefixes

__all__ = ["PARSERS", "classify", "verdict"]

#: First word of an sshd message proper -> the parser of its family of wordings. The one
#: table of sshd message families (effects/metrics' FAMILIES are address families).
#: No first word is in both (tests/test_classify.py checks it).
PARSERS: dict[str, Callable[[str], Raw | None]] = {**attempts.PARSERS, **connections.PARSERS}


def verdict(msg: str) -> Raw | None:
    """The raw verdict (kind, host, user, port) on a message proper, or None."""
    sp = msg.find(" ")
    family = PARSERS.get(msg[:sp] if sp > 0 else msg)
    return family(msg) if family is not None else None


def classify(message: str) -> Event | None:
    """Classify one sshd message (without the syslog prefix).

    Returns an Event for a failure (kind is a failure Kind) or a successful login
    (Kind.ACCEPTED), or None for anything else; pam_relay is set for sshd's relay of a
    PAM verdict ("error: PAM: Authentication failure for ..."). Never raises on any
    input; time is bounded because every family is a constant number of str scans over a
    capped length.
    """
    if len(message) > MAX_MESSAGE:
        return None
    msg, relay = split_prefixes(message)
    raw = verdict(msg)
    if raw is None:
        return None
    return Event(raw[0], raw[1], raw[2], raw[3], True) if relay else Event(*raw)
