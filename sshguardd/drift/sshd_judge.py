"""Findings: the sshd configuration model (and sshd's own answers) judged against the policy.

Pure: the model, the policy and `sshd -T` outputs arrive as data. sshd's answer wins
wherever it is known: the model locates the line to repair, sshd decides what is in force.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sshguardd.drift.sshd_model import (
    Location,
    SshdConfig,
    canonical_keyword,
    match_criteria,
    normalise_value,
)

# Keywords whose lines accumulate (or are keyed by their first argument) instead of the
# first value winning: "the value that takes effect" is not one line, so a policy cannot
# be enforced by editing one. judge() leaves them out; policy_problems() names them.
MULTI_VALUED = frozenset({
    "acceptenv", "allowgroups", "allowusers", "denygroups", "denyusers", "hostkey",
    "hostcertificate", "listenaddress", "port", "setenv", "subsystem", "include", "match",
    "authorizedkeysfile", "permitopen", "permitlisten", "channeltimeout",
})


class Rule(Protocol):
    """A requirement other than "equals the policy value" (a profile's bound or set of
    allowed values: sshguardd.drift.profiles.Requirement)."""

    def holds(self, keyword: str, value: str | None) -> bool: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """One policy item judged. For a Match override, match names the block. context
    names the `sshd -T -C` connection a cross-check finding came from. expected is the
    value a repair writes; with a rule, compliance is the rule's verdict instead of
    equality (MaxAuthTries 3 passes "<= 4" though a repair would write 4)."""

    keyword: str
    expected: str
    actual: str
    source: Location | None
    match: tuple[str, ...] = ()
    context: str = ""
    rule: Rule | None = None

    def holds(self, value: str | None) -> bool:
        """Whether `value` satisfies this item (sshd -T's answer after a repair)."""
        if self.rule is not None:
            return self.rule.holds(self.keyword, value)
        return value is not None and normalise_value(self.keyword, value) == \
            normalise_value(self.keyword, self.expected)

    @property
    def compliant(self) -> bool:
        return self.holds(self.actual)

    @property
    def item(self) -> str:
        if self.context:
            return f"{self.keyword} (sshd -T -C {self.context})"
        return self.keyword if not self.match else f"{self.keyword} ({self.match[-1]})"


def policy_items(policy: Mapping[str, object]) -> dict[str, str]:
    """The policy as canonical keyword -> value text (TOML booleans become yes/no)."""
    out = {}
    for key, value in policy.items():
        if isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = str(value)
        out[canonical_keyword(key)] = text
    return out


def policy_problems(policy: Mapping[str, object]) -> list[str]:
    """Policy keywords this model cannot enforce, with the reason."""
    return [f"{kw}: its lines accumulate in sshd_config, so no single line decides it; "
            "not enforced" for kw in policy_items(policy) if kw in MULTI_VALUED]


def judge(model: SshdConfig, policy: Mapping[str, object],
          sshd_t: Mapping[str, str] | None = None,
          rules: Mapping[str, Rule] | None = None) -> list[Finding]:
    """Judge every policy keyword: its global value and each Match block that sets it.

    sshd_t, when given, is `sshd -T` output as keyword -> value; where it disagrees with
    the model about a global value, sshd's value is the finding's actual value (the
    source line stays the model's, the line a repair would change). rules (keyword ->
    Rule) judge those keywords by their rule instead of equality.
    """
    rules = rules or {}
    findings = []
    for kw, expected in policy_items(policy).items():
        if kw in MULTI_VALUED:
            continue
        eff = model.effective(kw)
        actual = eff.value
        real = sshd_t.get(kw) if sshd_t is not None else None
        if real is not None and (eff.source is None or normalise_value(kw, real)
                                 != normalise_value(kw, actual)):
            actual = real
        findings.append(Finding(kw, expected, actual, eff.source, rule=rules.get(kw)))
        for d in model.match_overrides(kw):
            findings.append(Finding(kw, expected, d.value, d.location, d.match,
                                    rule=rules.get(kw)))
    return findings


def disagreements(model: SshdConfig, sshd_t: Mapping[str, str],
                  policy: Mapping[str, object]) -> list[str]:
    """Global policy keywords on which the model and `sshd -T` disagree: each is a line
    the model misread, so its verdict must not be trusted for a restart."""
    out = []
    for kw in policy_items(policy):
        if kw in MULTI_VALUED or kw not in sshd_t:
            continue
        eff = model.effective(kw)
        if eff.source is not None and normalise_value(kw, eff.value) != normalise_value(
                kw, sshd_t[kw]):
            out.append(f"model read {kw}={eff.value!r} at {eff.source}, "
                       f"sshd -T says {sshd_t[kw]!r}")
    return out


def cross_check(answers: Mapping[str, Mapping[str, str]], policy: Mapping[str, object],
                known: set[tuple[str, str]],
                rules: Mapping[str, Rule] | None = None) -> list[Finding]:
    """Findings from `sshd -T -C` answers (context spec -> parsed output) for policy
    keywords that are wrong in a context, unless `known` already holds (keyword, actual):
    a Match block the model saw. What is left is drift the model did not see."""
    out = []
    for spec, real in answers.items():
        for kw, expected in policy_items(policy).items():
            if kw in MULTI_VALUED or kw not in real:
                continue
            f = Finding(kw, expected, real[kw], None, context=spec,
                        rule=(rules or {}).get(kw))
            if not f.compliant and (kw, normalise_value(kw, real[kw])) not in known:
                out.append(f)
    return out


# ---------------------------------------------------------------------------- Match probes

# `sshd -T -C` insists on a value for every criterion any Match block uses, so a probe
# always carries all of these; the defaults are documentation addresses (RFC 5737) that no
# real Match block should name, and root, the user the policy is mostly about. addr is
# also "an outside address": a connection from the internet.
PROBE_DEFAULTS = {"user": "root", "host": "probe.invalid", "addr": "192.0.2.1",
                  "laddr": "192.0.2.2", "lport": "22"}
_CRITERIA = {"user": "user", "host": "host", "address": "addr",
             "localaddress": "laddr", "localport": "lport", "rdomain": "rdomain"}


def context_spec(context: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in context.items())


def _sample(criterion: str, patterns: str) -> str | None:
    """One value that the (comma-separated, possibly negated, wildcarded) pattern list
    matches, or None if we cannot make one up."""
    for pat in patterns.split(","):
        pat = pat.strip()
        if not pat or pat.startswith("!"):
            continue
        if any(ord(c) < 0x21 or c == "," for c in pat):
            return None  # not something `-C` can carry
        if criterion in ("addr", "laddr"):
            if "/" in pat:
                try:
                    net = ipaddress.ip_network(pat, strict=False)
                except ValueError:
                    continue
                hosts = net.hosts()
                return str(next(iter(hosts), net.network_address))
            guess = pat.replace("*", "1").replace("?", "1")
            try:
                ipaddress.ip_address(guess)
            except ValueError:
                if pat == "*":
                    return PROBE_DEFAULTS[criterion]
                continue
            return guess
        if criterion == "lport":
            return pat if pat.isdigit() else None
        return pat.replace("*", "x").replace("?", "x")
    return None


def match_context(match: tuple[str, ...]) -> dict[str, str] | None:
    """A `sshd -T -C` connection spec that satisfies every Match line in `match`, or None
    when one uses a criterion a probe cannot fake (Group, Exec-like, negation only)."""
    spec = dict(PROBE_DEFAULTS)
    for line in match:
        words, unsure = match_criteria(line)
        if unsure:
            return None
        toks = words[1:] if words and words[0].lower() == "match" else words
        i = 0
        while i < len(toks):
            word = toks[i].lower()
            if word == "all":
                i += 1
                continue
            key = _CRITERIA.get(word)
            if key is None or i + 1 >= len(toks):
                return None
            value = _sample(key, toks[i + 1])
            if value is None:
                return None
            spec[key] = value
            i += 2
    return spec
