"""Is sshd up to date? Pure judgments on what the package manager and /proc told us.

Three questions, each answered from data handed in (the effects side, `effects/packages`,
runs `apt-cache policy` / `rpm -q` and reads /proc):

- installed and candidate versions of the watched package, as the package manager itself
  decides them (apt's candidate already honours pins; we never re-derive it from lists);
- whether a version newer than the installed one comes from a security origin (Debian's
  and Ubuntu's security archives: release label `Debian-Security`, or an archive/codename
  ending in `-security`; on the RPM family an advisory of type `security` from `dnf
  updateinfo`);
- whether a running sshd (the listener or a session) still runs a binary or libraries that
  were replaced since it started: `/proc/PID/exe` gone or no longer the installed file,
  deleted mapped libraries, or a start before the package's install time.

Debian version ordering is implemented here (epoch, upstream, revision; `~` sorts before
everything, letters before non-letters) because "newer than installed" must be judged
exactly as dpkg does; tests/test_updates.py compares it with `dpkg --compare-versions`.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# -- Debian version comparison (deb-version(7)) ---------------------------------------------


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_version(v: str) -> tuple[int, str, str]:
    epoch, sep, rest = v.partition(":")
    if not sep:
        epoch, rest = "0", v
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        upstream, revision = rest, ""
    return (int(epoch) if epoch.isdigit() else 0), upstream, revision


def compare_debian(a: str, b: str) -> int:
    """<0, 0, >0 as dpkg orders versions `a` and `b`."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


_DIGITS = frozenset(string.digits)
_LETTERS = frozenset(string.ascii_letters)
_ALNUM = _DIGITS | _LETTERS


def _rpmvercmp(a: str, b: str) -> int:
    """rpm's rpmvercmp(): alternating digit/letter segments, other characters separate,
    `~` sorts before anything (even the end), `^` after the end but before more text."""
    if a == b:
        return 0
    i = j = 0
    na, nb = len(a), len(b)

    def sep(s: str, k: int) -> int:  # rpm's risalnum() is ASCII only
        while k < len(s) and s[k] not in _ALNUM and s[k] not in "~^":
            k += 1
        return k

    while i < na or j < nb:
        i, j = sep(a, i), sep(b, j)
        ca = a[i] if i < na else ""
        cb = b[j] if j < nb else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ca and cb):
            break
        kind = _DIGITS if ca in _DIGITS else _LETTERS
        numeric = kind is _DIGITS
        si, sj = i, j
        while i < na and a[i] in kind:
            i += 1
        while j < nb and b[j] in kind:
            j += 1
        x, y = a[si:i], b[sj:j]
        if not y:  # the segments are of different types: numbers are newer
            return 1 if numeric else -1
        if numeric:
            x, y = x.lstrip("0"), y.lstrip("0")
            if len(x) != len(y):
                return 1 if len(x) > len(y) else -1
        if x != y:
            return 1 if x > y else -1
    if i >= na and j >= nb:
        return 0
    return 1 if i < na else -1


def compare_rpm(a: str, b: str) -> int:
    """<0, 0, >0 for two `[EPOCH:]VERSION-RELEASE` strings as rpm orders them."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _rpmvercmp(ua, ub) or _rpmvercmp(ra, rb)


# -- apt-cache policy -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Release:
    """One package file's `release` line: o=origin, l=label, a=archive, n=codename."""

    source: str
    origin: str = ""
    label: str = ""
    archive: str = ""
    codename: str = ""

    @property
    def security(self) -> bool:
        return ("security" in self.label.lower() or self.archive.endswith("-security")
                or self.codename.endswith("-security"))


@dataclass(frozen=True, slots=True)
class Offer:
    """A version of the package and the package files (sources) that offer it."""

    version: str
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PackagePolicy:
    installed: str | None
    candidate: str | None
    offers: tuple[Offer, ...]


def _none(v: str) -> str | None:
    return None if v in ("", "(none)") else v


def parse_apt_policy(text: str) -> PackagePolicy:
    """`LC_ALL=C apt-cache policy PKG` for one package."""
    installed = candidate = None
    offers: list[Offer] = []
    version: str | None = None
    sources: list[str] = []
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Installed:"):
            installed = _none(stripped.split(":", 1)[1].strip())
        elif stripped.startswith("Candidate:"):
            candidate = _none(stripped.split(":", 1)[1].strip())
        elif stripped == "Version table:":
            in_table = True
        elif in_table and stripped:
            fields = stripped.split()
            # A version line is indented 5 spaces (" *** " marks the installed one); a
            # source line is indented 8 and starts with its priority.
            indent = len(line) - len(line.lstrip())
            if indent <= 5:
                if version is not None:
                    offers.append(Offer(version, tuple(sources)))
                version = fields[1] if fields[0] == "***" else fields[0]
                sources = []
            elif len(fields) >= 2 and fields[0].lstrip("-").isdigit():
                sources.append(" ".join(fields[1:]))
    if version is not None:
        offers.append(Offer(version, tuple(sources)))
    return PackagePolicy(installed, candidate, tuple(offers))


def parse_apt_releases(text: str) -> dict[str, Release]:
    """`LC_ALL=C apt-cache policy` (no arguments): package file -> its release fields."""
    out: dict[str, Release] = {}
    source: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        fields = stripped.split(None, 1)
        if len(fields) == 2 and fields[0].lstrip("-").isdigit() and line.startswith(" ") \
                and not line.startswith("     "):
            source = fields[1]
            out[source] = Release(source)
        elif source is not None and stripped.startswith("release "):
            kv = dict(part.split("=", 1) for part in stripped[8:].split(",") if "=" in part)
            out[source] = Release(source, kv.get("o", ""), kv.get("l", ""), kv.get("a", ""),
                                  kv.get("n", ""))
        elif stripped == "Pinned packages:":
            break
    return out


# -- the RPM family -------------------------------------------------------------------------


def parse_rpm_query(text: str) -> tuple[str | None, float | None]:
    """`rpm -q --qf '%{EPOCH}:%{VERSION}-%{RELEASE} %{INSTALLTIME}\\n' PKG`: the newest
    installed EVR (several lines when more than one is installed) and its install time."""
    best: tuple[str, float] | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        evr = parts[0].removeprefix("(none):")
        if best is None or compare_rpm(evr, best[0]) > 0:
            best = (evr, float(parts[1]))
    return (best[0], best[1]) if best else (None, None)


def parse_dnf_upgrades(text: str, package: str) -> str | None:
    """`dnf -q list --upgrades PKG`: `NAME.ARCH  EVR  REPO` lines; the newest EVR of PKG."""
    best: str | None = None
    for line in text.splitlines():
        parts = line.split()
        if (len(parts) >= 3 and parts[0].rsplit(".", 1)[0] == package
                and (best is None or compare_rpm(parts[1], best) > 0)):
            best = parts[1]
    return best


def parse_dnf_updateinfo(text: str, package: str) -> list[tuple[str, str]]:
    """`dnf -q updateinfo list --available PKG` lines (`ADVISORY TYPE NEVRA`): the
    (advisory, type) pairs that name PKG, e.g. ("ALAS2023-2024-652", "important/Sec.")."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1].startswith(package + "-"):
            out.append((parts[0], parts[1]))
    return out


# -- the verdicts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateVerdict:
    installed: str | None
    candidate: str | None
    pending: bool
    security: bool
    advisories: tuple[str, ...] = ()


def judge_apt(policy: PackagePolicy, releases: dict[str, Release]) -> UpdateVerdict:
    inst, cand = policy.installed, policy.candidate
    pending = bool(inst and cand and compare_debian(cand, inst) > 0)
    security = False
    if inst:
        for offer in policy.offers:
            if compare_debian(offer.version, inst) <= 0:
                continue
            if cand and compare_debian(offer.version, cand) > 0:
                continue  # not reachable: apt would not install it (pinned away)
            if any(releases.get(s, Release(s)).security for s in offer.sources):
                security = True
    return UpdateVerdict(inst, cand, pending, security)


def judge_rpm(installed: str | None, candidate: str | None,
              advisories: Sequence[tuple[str, str]]) -> UpdateVerdict:
    pending = bool(installed and candidate and compare_rpm(candidate, installed) > 0)
    sec = tuple(a for a, kind in advisories if "sec" in kind.lower())
    return UpdateVerdict(installed, candidate, pending, bool(sec), sec)


@dataclass(frozen=True, slots=True)
class ProcFacts:
    """What /proc says about one running sshd process."""

    pid: int
    comm: str
    ppid: int
    exe: str               # readlink of /proc/PID/exe (may end in " (deleted)")
    exe_current: bool      # same inode as the installed binary at that path
    deleted_libs: tuple[str, ...]
    started: float         # epoch seconds


@dataclass(frozen=True, slots=True)
class StaleVerdict:
    stale: bool
    reasons: tuple[str, ...]


def judge_stale(procs: Iterable[ProcFacts], installed_at: float | None) -> StaleVerdict:
    """A running sshd is stale when it runs code the package has replaced since."""
    procs = tuple(procs)
    pids = {p.pid for p in procs}
    reasons = []
    for p in procs:
        role = "listener" if p.comm == "sshd" and p.ppid not in pids else "session"
        who = f"{role} pid {p.pid}"
        if p.exe.endswith(" (deleted)") or not p.exe_current:
            reasons.append(f"{who} runs a replaced binary ({p.exe})")
        elif p.deleted_libs:
            reasons.append(f"{who} maps deleted libraries ({', '.join(p.deleted_libs[:3])})")
        elif installed_at is not None and p.started + 1 < installed_at:
            reasons.append(f"{who} started before the package was installed")
    return StaleVerdict(bool(reasons), tuple(reasons))
