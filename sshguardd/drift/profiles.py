"""Profiles: named sets of controls (CIS, DISA STIG, or sshguardd's own baseline) as data.

A profile is a TOML file (the shipped ones are sshguardd/profiles/*.toml) of two kinds of
controls:

- `[[control]]`: one sshd keyword, the benchmark IDs it answers (`refs`), a requirement
  (an exact value, a set of allowed values, a numeric bound, MaxStartups' three fields,
  RekeyLimit's two, an allowed or forbidden algorithm list, or "one of these keywords is
  set"), the value a repair writes (`set`) and whether sshguardd enforces it or only
  reports it (`action`);
- `[[file]]`: the owner, group and most permissive mode allowed for a class of files
  (sshd_config, its drop-ins, the host keys' private and public halves).

Pure: parse() takes text and returns a validated Profile or raises config.ConfigError
naming the key path of every problem (`control[3].max`), which the CLI turns into exit 78.
The judgments (Requirement.holds, FileControl.judge) take values as data; sshd's own
answers (`sshd -T`) and lstat results arrive from the effects.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sshguardd.config import ConfigError
from sshguardd.drift.sshd_judge import MULTI_VALUED, policy_items
from sshguardd.drift.sshd_model import canonical_keyword, normalise_value

NAMES = ("baseline", "cis", "stig")
FILE_CLASSES = ("sshd_config", "dropins", "host_private_keys", "host_public_keys")
# RekeyLimit's size suffixes, as sshd's scan_scaled() reads them.
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_TIME = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _int(text: str) -> int | None:
    t = text.strip()
    return int(t) if t.isdigit() else None


def _seconds(text: str) -> int | None:
    """sshd's convtime(): digits with s/m/h/d/w suffixes, summed ("1h30m")."""
    total, num = 0, ""
    for c in text.strip().lower():
        if c.isdigit():
            num += c
        elif c in _TIME and num:
            total, num = total + int(num) * _TIME[c], ""
        else:
            return None
    return total + int(num) if num else total


def _scaled(text: str) -> int | None:
    t = text.strip().lower()
    unit = t[-1:] if t[-1:] in _SCALE else ""
    num = t[:-1] if unit else t
    return int(num) * _SCALE[unit] if num.isdigit() else None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaxStartupsBound(_Strict):
    """Each field of MaxStartups' start:rate:full at most this (CIS: 10:30:60)."""

    start: int = Field(ge=1)
    rate: int = Field(ge=1, le=100)
    full: int = Field(ge=1)


class RekeyBound(_Strict):
    """RekeyLimit's data and time limits both set (not 0/none) and at most these."""

    bytes: int = Field(ge=1)
    seconds: int = Field(ge=1)


class Requirement(_Strict):
    """What a control's effective value must satisfy; every given part must hold."""

    equals: str | None = None
    one_of: tuple[str, ...] | None = None
    min: int | None = None
    max: int | None = None
    maxstartups: MaxStartupsBound | None = None
    rekeylimit: RekeyBound | None = None
    subset_of: tuple[str, ...] | None = None   # a comma list: every entry allowed
    excludes: tuple[str, ...] | None = None    # a comma list: none of these
    not_equal: str | None = None

    def holds(self, keyword: str, value: str | None) -> bool:
        """Whether `value` (as `sshd -T` prints it; None: not set) satisfies this."""
        if value is None:
            return False
        v = normalise_value(keyword, value)
        if self.equals is not None and v != normalise_value(keyword, self.equals):
            return False
        if self.one_of is not None and v not in {normalise_value(keyword, o)
                                                 for o in self.one_of}:
            return False
        if self.not_equal is not None and v == normalise_value(keyword, self.not_equal):
            return False
        if self.min is not None or self.max is not None:
            n = _int(v)
            if n is None or (self.min is not None and n < self.min) or (
                    self.max is not None and n > self.max):
                return False
        if self.maxstartups is not None:
            # sshd -T always prints all three fields (start:rate:full).
            parts = [_int(p) for p in v.split(":")]
            b = self.maxstartups
            if len(parts) != 3 or None in parts or any(
                    p > lim for p, lim in zip(parts, (b.start, b.rate, b.full),  # type: ignore[operator]
                                              strict=True)):
                return False
        if self.rekeylimit is not None:
            # sshd -T prints bytes and seconds; "0" (or "none") means no limit.
            words = v.split()
            size = _scaled(words[0]) if words else None
            secs = _seconds(words[1]) if len(words) > 1 else None
            r = self.rekeylimit
            if not size or not secs or size > r.bytes or secs > r.seconds:
                return False
        items = [i for i in v.split(",") if i]
        if self.subset_of is not None and not set(items) <= {s.lower() for s in
                                                              self.subset_of}:
            return False
        return not (self.excludes is not None and set(items) & {s.lower() for s in
                                                                 self.excludes})

    def describe(self) -> str:
        """The requirement as a person reads it ("<= 4", "one of VERBOSE, INFO")."""
        out = []
        if self.equals is not None:
            out.append(self.equals)
        if self.one_of is not None:
            out.append("one of " + ", ".join(self.one_of))
        if self.min is not None and self.max is not None:
            out.append(f"{self.min}..{self.max}")
        elif self.min is not None:
            out.append(f">= {self.min}")
        elif self.max is not None:
            out.append(f"<= {self.max}")
        if self.maxstartups is not None:
            b = self.maxstartups
            out.append(f"<= {b.start}:{b.rate}:{b.full} (each field)")
        if self.rekeylimit is not None:
            out.append(f"set, <= {self.rekeylimit.bytes} bytes and "
                       f"{self.rekeylimit.seconds} s")
        if self.subset_of is not None:
            out.append("only " + ",".join(self.subset_of))
        if self.excludes is not None:
            out.append("none of " + ",".join(self.excludes))
        if self.not_equal is not None:
            out.append(f"not {self.not_equal}")
        return "; ".join(out) or "(anything)"


class Control(_Strict):
    """One sshd keyword control. `any_set` instead names keywords of which at least one
    must be set (CIS's "sshd access is configured": AllowUsers, AllowGroups, ...)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    refs: tuple[str, ...] = Field(min_length=1)
    title: str = Field(min_length=1, max_length=200)
    keyword: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]{1,40}$")
    require: Requirement = Requirement()
    any_set: tuple[str, ...] | None = None
    set: str | None = Field(None, min_length=1, max_length=500)
    action: Literal["enforce", "report"]

    @model_validator(mode="after")
    def _coherent(self) -> Control:
        kw = canonical_keyword(self.keyword)
        if self.any_set is None and self.require == Requirement():
            raise ValueError("a control needs a requirement (require.*) or any_set")
        if self.any_set is not None and self.action == "enforce":
            raise ValueError("an any_set control can only be reported (no single line "
                             "decides it)")
        if self.action == "enforce":
            if kw in MULTI_VALUED:
                raise ValueError(f"{self.keyword}'s lines accumulate in sshd_config, so no "
                                 "single line decides it: action must be \"report\"")
            if self.set is None:
                raise ValueError("an enforced control needs `set`, the value a repair "
                                 "writes")
        if self.set is not None and self.any_set is None and not self.require.holds(
                kw, self.set):
            raise ValueError(f"set = {self.set!r} does not satisfy its own requirement "
                             f"({self.require.describe()})")
        return self

    @property
    def kw(self) -> str:
        return canonical_keyword(self.keyword)

    def holds(self, value: str | None, sshd_t: Mapping[str, str] | None = None) -> bool:
        if self.any_set is not None:
            return any((sshd_t or {}).get(canonical_keyword(k)) for k in self.any_set)
        return self.require.holds(self.kw, value)

    def describe(self) -> str:
        if self.any_set is not None:
            return "one of " + ", ".join(self.any_set) + " set"
        return self.require.describe()


@dataclass(frozen=True, slots=True)
class FileState:
    """What lstat() says of one file; kind "file", "symlink", "missing" or "other"."""

    path: str
    kind: str
    uid: int = -1
    gid: int = -1
    mode: int = 0
    owner: str = ""
    group: str = ""


class FileControl(_Strict):
    """Owner, allowed groups and the most permissive mode per group for a file class:
    `modes = { root = "0600", ssh_keys = "0640" }` (RHEL's ssh_keys group may read)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    refs: tuple[str, ...] = Field(min_length=1)
    title: str = Field(min_length=1, max_length=200)
    files: Literal["sshd_config", "dropins", "host_private_keys", "host_public_keys"]
    owner: str = Field("root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    modes: dict[str, str] = Field(min_length=1)
    action: Literal["enforce", "report"]

    @model_validator(mode="after")
    def _octal(self) -> FileControl:
        for group, mode in self.modes.items():
            if not (len(mode) == 4 and mode.startswith("0")
                    and all(c in "01234567" for c in mode)):
                raise ValueError(f"modes.{group}: {mode!r} is not a 4-digit octal mode "
                                 "like \"0600\"")
        return self

    def limit(self, group: str) -> int | None:
        m = self.modes.get(group)
        return int(m, 8) if m is not None else None

    def problems(self, st: FileState) -> list[str]:
        """Why `st` fails this control (empty: it passes)."""
        if st.kind == "missing":
            return []  # nothing to protect; sshd's own checks report a missing key
        if st.kind != "file":
            return [f"a {st.kind}, not a regular file"]
        out = []
        if st.owner != self.owner:
            out.append(f"owner {st.owner or st.uid}, not {self.owner}")
        limit = self.limit(st.group)
        if limit is None:
            out.append(f"group {st.group or st.gid}, not {' or '.join(self.modes)}")
        elif st.mode & 0o7777 & ~limit:
            out.append(f"mode {st.mode & 0o7777:04o}, more than {limit:04o}")
        return out

    def describe(self) -> str:
        return " or ".join(f"{self.owner}:{g} {m} or stricter" for g, m in self.modes.items())


class Profile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    title: str = Field(min_length=1, max_length=200)
    control: tuple[Control, ...] = ()
    file: tuple[FileControl, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Profile:
        seen: set[str] = set()
        for cid in [c.id for c in self.control] + [f.id for f in self.file]:
            if cid in seen:
                raise ValueError(f"control id {cid!r} appears twice")
            seen.add(cid)
        return self

    @property
    def size(self) -> int:
        return len(self.control) + len(self.file)

    def enforced(self, opt_in: Sequence[str] = ()) -> list[Control]:
        """The keyword controls the drift guard enforces: those marked enforce, and the
        report ones named in `opt_in` (which must have a `set` value)."""
        return [c for c in self.control if c.action == "enforce" or c.id in opt_in]

    def check_opt_in(self, opt_in: Sequence[str]) -> list[tuple[str, str]]:
        """Problems with [drift] profile_enforce: unknown IDs or unenforceable controls."""
        ids = {c.id: c for c in self.control}
        files = {f.id for f in self.file}
        out = []
        for i, cid in enumerate(opt_in):
            c = ids.get(cid)
            key = f"drift.profile_enforce[{i}]"
            if c is None and cid not in files:
                out.append((key, f"no control {cid!r} in profile {self.name!r}"))
            elif c is not None and (c.set is None or c.any_set is not None
                                    or c.kw in MULTI_VALUED):
                why = (f"{cid} ({c.keyword}) cannot be enforced: no single line decides "
                       "it, or the profile gives no value to write")
                out.append((key, why))
        return out


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def parse(text: str, path: str = "<profile>") -> Profile:
    """Validate a profile file's text. Raises ConfigError with one (key path, reason)
    per problem, e.g. ("control[2].require.max", "Input should be a valid integer")."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("(syntax)", str(exc))]) from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            reason = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                reason = "unknown key"
            problems.append((_loc(err["loc"]), reason))
        raise ConfigError(path, problems) from None


def policy(profile: Profile, settings: BaseModel, opt_in: Sequence[str] = ()
           ) -> tuple[dict[str, str], dict[str, Requirement]]:
    """What the drift guard enforces: keyword -> the value a repair writes, and keyword
    -> the requirement judging it (exact values have none: equality decides).

    The profile's enforced controls (and the opted-in report ones), then
    [drift.sshd_settings]: under the baseline profile all of it, defaults included
    (exactly the policy before profiles existed); under any other profile only the keys
    the admin wrote, each an exact value replacing the profile's control for it."""
    targets: dict[str, str] = {}
    rules: dict[str, Requirement] = {}
    for c in profile.enforced(opt_in):
        if c.set is None:
            continue  # validated away: an enforced control always has a value to write
        targets[c.kw] = c.set
        if c.require.equals is None:
            rules[c.kw] = c.require
    dump = settings.model_dump()
    site = dump if profile.name == "baseline" else {
        k: v for k, v in dump.items() if k in settings.model_fields_set}
    for kw, value in policy_items(site).items():
        targets[kw] = value
        rules.pop(kw, None)
    return targets, rules


def file_paths(files: str, main: str, read: Sequence[str], hostkeys: Sequence[str]
               ) -> list[str]:
    """The paths a FileControl's class covers: the main file, every other file sshd read
    (Include), the host keys sshd uses (`sshd -T` hostkey lines) or their .pub halves."""
    if files == "sshd_config":
        return [main]
    if files == "dropins":
        return [f for f in dict.fromkeys(read) if f != main]
    if files == "host_private_keys":
        return list(dict.fromkeys(hostkeys))
    return [f"{k}.pub" for k in dict.fromkeys(hostkeys)]
