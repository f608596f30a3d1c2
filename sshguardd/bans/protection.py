"""Admin protection, the part of the ban policy that spares a network with a recent login.
Pure: no clock, no I/O.

A login protects its network only for failures against an account that logged in from it
(the admin who mistyped their own password), and only while the network's score stays
below protect_max_failures; a failure against any other account, or one without a user,
is judged like anyone's (the guest who logged in once and then guesses root's password).
A login whose account is unknown (restored from a store without it) protects nothing.
Bounded: as many logins as the policy tracks offenders, MAX_LOGIN_USERS accounts each,
MAX_WITHHELD withheld networks listed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

MAX_LOGIN_USERS = 8
MAX_WITHHELD = 1024
_EPSILON = 1e-5  # float32 sums vs the limit, as in the policy


@dataclass(frozen=True, slots=True)
class Withheld:
    """A ban admin protection withheld: the network, the first and latest withheld
    failure, how many, the score then, the account tried and the accounts that logged in
    from the network."""

    network: str
    first: float
    last: float
    count: int
    score: float
    user: str
    logged_in_as: tuple[str, ...]


class AdminProtection:
    """Logins per offender key (the policy's int keys) and the bans they withheld.

    window: protect_logged_in (0 disables); limit: protect_max_failures; cap: how many
    logins to remember (the oldest go first, evict at a time); network: key -> its name."""

    def __init__(self, window: float, limit: float, cap: int, evict: int,
                 network: Callable[[int], str]) -> None:
        self.window = window
        self.limit = limit
        self.cap = cap
        self.evict = evict
        self.network = network
        self.suppressed = 0
        # key -> (time of the latest login, accounts that logged in, newest last)
        self._logins: dict[int, tuple[float, tuple[str, ...]]] = {}
        self._withheld: dict[int, Withheld] = {}
        self._new: list[Withheld] = []

    def restore(self, key: int, when: float, users: Iterable[str]) -> None:
        self._logins[key] = (when, tuple(users)[-MAX_LOGIN_USERS:])

    def remember(self, key: int, t: float, user: str | None) -> None:
        """A successful login from key's network as user."""
        _, users = self._logins.pop(key, (t, ()))
        if len(self._logins) >= self.cap:
            for old in list(itertools.islice(self._logins, self.evict)):
                del self._logins[old]
        if user is not None:
            users = tuple(u for u in users if u != user)[-(MAX_LOGIN_USERS - 1):] + (user,)
        self._logins[key] = (t, users)

    def judge(self, key: int, t: float, score: float, user: str | None) -> str | None:
        """For a network whose score just reached max_retry: None when its ban is
        withheld (counted, listed), else what to add to the ban's reason ("" when no
        login protects it)."""
        login = self._logins.get(key)
        if login is None or self.window <= 0 or t - login[0] > self.window:
            self._withheld.pop(key, None)
            return ""
        below = score + _EPSILON < self.limit
        if user is not None and user in login[1] and below:
            self._withhold(key, t, score, user, login[1])
            return None
        self._withheld.pop(key, None)
        who = ", ".join(login[1]) or "an unknown account"
        return (f"; its login as {who} " + (
            f"does not protect failures against {user or 'no account'}" if below
            else f"protects at most {self.limit:g}"))

    def _withhold(self, key: int, t: float, score: float, user: str,
                  users: tuple[str, ...]) -> None:
        self.suppressed += 1
        w = self._withheld.pop(key, None)
        if w is None:
            if len(self._withheld) >= MAX_WITHHELD:
                del self._withheld[next(iter(self._withheld))]
            w = Withheld(self.network(key), t, t, 0, score, user, users)
            self._new.append(w)
            if len(self._new) > MAX_WITHHELD:
                del self._new[0]
        self._withheld[key] = Withheld(w.network, w.first, t, w.count + 1, score, user, users)

    def take_new(self) -> list[Withheld]:
        out, self._new = self._new, []
        return out

    def withheld(self) -> list[Withheld]:
        return sorted(self._withheld.values(), key=lambda w: -w.last)

    def login_users(self) -> dict[str, tuple[str, ...]]:
        return {self.network(k): u for k, (_, u) in self._logins.items() if u}

    def expire(self, now: float, horizon: float) -> None:
        """Drop logins older than the window and withheld networks whose failures are
        older than horizon (find_time) or whose login is gone."""
        if self.window <= 0:
            return
        since = now - self.window
        self._logins = {k: w for k, w in self._logins.items() if w[0] >= since}
        self._withheld = {k: w for k, w in self._withheld.items()
                          if k in self._logins and w.last >= horizon}


def restore_all(p: AdminProtection, logged_in: Mapping[str, float],
                login_users: Mapping[str, Iterable[str]],
                key_of: Callable[[str], int | None]) -> None:
    """Fill p from the store's logins (network -> time) and their accounts."""
    for network, when in logged_in.items():
        key = key_of(network)
        if key is not None:
            p.restore(key, when, login_users.get(network, ()))
