"""detect: sshd text -> `contracts.Event`. Pure: no I/O, no clock, no global mutable state
except a bounded memo of validated addresses.

`classify(message)` classifies one message; `Correlator` adds the per-connection memory
that a few old, address-less wordings need (fail2ban's multi-line matches), keyed by the
logging host and sshd's process id, and is what the daemon feeds every sshd entry.

Modules: tokens (addresses, ports, sshd's suffixes and prefixes), attempts and
connections (the families of wordings), families (first-word dispatch, classify),
correlate (Correlator), logformats (syslog lines and journal entries -> LogRecord).

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
SSHGuard's attack_scanner.l grammar. tests/data/sshd_golden.jsonl has one line per wording.
"""

from sshguardd.detect.correlate import (
                                        CORRELATED_WORDS,
                                        ENDING_WORDS,
                                        ENDINGS,
                                        Correlator,
                                        orphan_kind,
)
from sshguardd.detect.families import PARSERS, classify, verdict
from sshguardd.detect.tokens import MAX_MESSAGE, Raw, parse_host, split_prefixes, strip_prefixes

__all__ = [
                                        "CORRELATED_WORDS",
                                        "ENDINGS",
                                        "ENDING_WORDS",
                                        "MAX_MESSAGE",
                                        "PARSERS",
                                        "Correlator",
                                        "Raw",
                                        "classify",
                                        "orphan_kind",
                                        "parse_host",
                                        "split_prefixes",
                                        "strip_prefixes",
                                        "verdict",
]
