"""Durations as people write them ("90s", "10m", "1h30m", "7d", "1w" or plain seconds),
parsed once and bounded.

Every duration is finite: TOML and JSON both spell infinity and NaN, and an infinite
debounce or ban reached the watcher thread and the nft transaction before. The bounds:

- MAX_DURATION (10 years) for every duration: anything longer is a typo, and a finite
  bound keeps `now + duration` an ordinary float everywhere.
- BAN_CEILING (365 days) for ban lengths (ban.ban_time, ban.max_ban_time, `ban --for`).
  A ban becomes an nft set element's timeout. nftables 1.0.6 takes timeouts up to
  18,446,744,073 s (2**64 ms) and fails the whole transaction with ERANGE ("Numerical
  result out of range") above that, measured in a private network namespace; one bad ban
  then takes every other ban of the batch with it. A year is far below that and far past
  any ban worth keeping: a source still attacking after a year is banned again.

Values above a bound are errors, never clamped: a clamp silently changes what the admin
asked for. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DAY = 86400.0
MAX_DURATION = 3650 * DAY
BAN_CEILING = 365 * DAY

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse(value: Any) -> float:
    """'1h30m' -> 5400.0. Numbers are seconds. Raises ValueError for anything else, and for
    values that are negative, not finite or longer than MAX_DURATION."""
    seconds = _seconds(value)
    if seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than {to_text(MAX_DURATION)}, the longest "
                         "duration sshguardd takes")
    return seconds


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '10m', not a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError("expected a duration such as '10m' or a number of seconds")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative")
    return seconds


def _parse_text(value: str) -> float:
    text = value.strip().lower().replace(" ", "")
    if _NUMBER.fullmatch(text):
        return float(text)
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: use e.g. '90s', '10m', '1h30m', '7d'")
    return total


def ban_length(value: Any) -> float:
    """A ban's length: a duration above zero and at most BAN_CEILING."""
    return check_ban_length(_seconds(value))


def check_ban_length(seconds: float) -> float:
    """Raise ValueError unless `seconds` is a ban length nft and the policy can hold (for
    values that did not come through parse(), e.g. a number from the control socket)."""
    if not math.isfinite(seconds):
        raise ValueError(f"{seconds!r} is not a finite duration")
    if seconds <= 0:
        raise ValueError("a ban must last a positive time (0s would ban nobody; to turn bans "
                         "off, set ban.enabled = false)")
    if seconds > BAN_CEILING:
        raise ValueError(f"{to_text(seconds)} is longer than the {to_text(BAN_CEILING)} a ban "
                         "may last (nft's timeouts are bounded)")
    return seconds


def to_text(seconds: float) -> str:
    """5400 -> '1h30m', 1209600 -> '2w', 0.1 -> '0.1s': exact, largest units first (weeks
    only for a whole number of them, so a year reads 365d)."""
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    s = int(seconds)
    if s % UNITS["w"] == 0:
        return f"{s // UNITS['w']}w"
    parts = []
    for unit in ("d", "h", "m", "s"):
        if s >= UNITS[unit]:
            parts.append(f"{s // UNITS[unit]}{unit}")
            s %= UNITS[unit]
    return "".join(parts)


def at_most(limit: float, why: str) -> AfterValidator:
    """A pydantic check: the duration is at most `limit`; `why` ends the message."""
    def check(seconds: float) -> float:
        if seconds > limit:
            raise ValueError(f"{to_text(seconds)} is longer than {to_text(limit)}: {why}")
        return seconds
    check.describes = f"at most {to_text(limit)}"  # type: ignore[attr-defined]  # gen_docs
    return AfterValidator(check)


def above_zero(why: str) -> AfterValidator:
    """A pydantic check: the duration is longer than 0s; `why` says what 0 would do."""
    def check(seconds: float) -> float:
        if seconds <= 0:
            raise ValueError(f"must be longer than 0s: {why}")
        return seconds
    check.describes = "longer than 0s"  # type: ignore[attr-defined]  # for gen_docs
    return AfterValidator(check)


# What scripts/gen_docs.py writes for each check in the configuration reference.
parse.describes = ""  # type: ignore[attr-defined]
ban_length.describes = f"longer than 0s, at most {to_text(BAN_CEILING)}"  # type: ignore[attr-defined]

# Pydantic field types for the config.
Duration = Annotated[float, BeforeValidator(parse)]
BanLength = Annotated[float, BeforeValidator(ban_length)]
