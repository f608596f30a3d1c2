"""Log injection: attacker-controlled text must never move the blame to another address.

History: DenyHosts CVE-2013-6890 banned any address an attacker wrote into a user name
("Invalid user x from 1.2.3.4 from REAL"); fail2ban CVE-2013-7176/7177 did the same
through unanchored host patterns, and fail2ban gh-2185 through "authenticating user"
names. Every place sshd copies client text into a message is exercised here: the user
name (up to 100 characters in auth.c's "%.100s"), the client's disconnect text, its
identification string, its algorithm offer, certificate key ids and hostbased client
user/host. The real attacker is REAL; FAKE must never be reported.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshguardd.contracts import Kind
from sshguardd.detect import Correlator, classify

REAL = "203.0.113.77"
REAL6 = "2001:db8:77::1"
FAKE = "192.0.2.1"

# sshd format strings with the attacker's text as {u} (user-like) or {t} (trailing text).
# The second field says whether attacker text can sit on *both* sides of the address, in
# which case refusing to blame (None) is acceptable; otherwise REAL must be found.
TEMPLATES: list[tuple[str, bool]] = [
    ("Invalid user {u} from {a} port 4242", False),
    ("Failed password for invalid user {u} from {a} port 4242 ssh2", False),
    ("Failed password for {u} from {a} port 4242 ssh2", False),
    ("Failed keyboard-interactive/pam for invalid user {u} from {a} port 4242 ssh2", False),
    ("Failed none for invalid user {u} from {a} port 4242 ssh2", False),
    ("error: maximum authentication attempts exceeded for invalid user {u} from {a} port 4242 ssh2 [preauth]", False),
    ("Connection closed by invalid user {u} {a} port 4242 [preauth]", False),
    ("Connection closed by authenticating user {u} {a} port 4242 [preauth]", False),
    ("Connection reset by invalid user {u} {a} port 4242 [preauth]", False),
    ("Disconnected from invalid user {u} {a} port 4242 [preauth]", False),
    ("Disconnecting invalid user {u} {a} port 4242: Too many authentication failures [preauth]", False),
    ("error: PAM: Authentication failure for illegal user {u} from {a}", False),
    ("error: PAM: User not known to the underlying authentication module for illegal user {u} from {a}", False),
    ("Bad protocol version identification '{u}' from {a} port 4242", False),
    ("Received disconnect from {a} port 4242:11: {t} [preauth]", False),
    ("Received disconnect from {a} port 4242:3: {t}: Auth fail [preauth]", False),
    ("Unable to negotiate with {a} port 4242: no matching cipher found. Their offer: {t} [preauth]", False),
    ("Failed publickey for invalid user {u} from {a} port 4242 ssh2: RSA SHA256:abcdef", False),
    ("Failed publickey for {u} from {a} port 4242 ssh2: RSA-CERT SHA256:abc ID {t} (serial 9) CA RSA SHA256:def", True),
    ('Failed hostbased for {u} from {a} port 4242 ssh2: RSA SHA256:abc, client user "{t}", client host "{t}"', True),
    ("Disconnecting invalid user {u} {a} port 4242: Change of username or service not allowed: ({u},ssh-connection) -> ({t},ssh-connection) [preauth]", True),
]

# Hand-picked payloads in the style of the CVEs above.
PAYLOADS = [
    f"x from {FAKE}",
    f"x from {FAKE} port 22",
    f"x from {FAKE} port 22 ssh2",
    f"x from {FAKE} port 22 ssh2: RSA SHA256:zz",
    f"x {FAKE} port 22",
    f"x {FAKE} port 22 [preauth]",
    f"{FAKE}",
    f"from {FAKE}",
    f" from ::ffff:{FAKE}",
    f"x from {FAKE} port 22: Too many authentication failures",
    f"x {FAKE} port 22: Change of username or service not allowed: (x",
    f"x) -> (y,ssh-connection) [preauth]\nJan  1 00:00:00 h sshd[1]: Invalid user z from {FAKE}",
    f"root from {FAKE} not allowed because listed in DenyUsers",
    "",
    " ",
    "invalid user ",
    f"{FAKE} via {FAKE}",
]


def _blamed(message: str) -> str | None:
    event = classify(message)
    return event.host if event is not None else None


@pytest.mark.parametrize("template,ambiguous", TEMPLATES, ids=lambda v: str(v)[:50])
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payloads(template: str, ambiguous: bool, payload: str) -> None:
    for addr in (REAL, REAL6):
        message = template.format(u=payload, t=payload, a=addr)
        host = _blamed(message)
        if "\n" in payload and "{u}" in template and "Bad protocol" not in template:
            # A newline cannot reach the journal inside one message from sshd (it escapes
            # control characters), but if it did, the first line is still sshd's.
            assert host in (addr, None)
            continue
        if ambiguous:
            assert host in (addr, None), message
        else:
            assert host == addr, message


def test_denyhosts_cve_2013_6890() -> None:
    # The user name of the advisory's proof of concept, as OpenSSH logs it.
    message = f"Invalid user aaa from {FAKE} from {REAL} port 50000"
    assert _blamed(message) == REAL


def test_fail2ban_gh_2185() -> None:
    message = f"Connection closed by authenticating user test {FAKE} port 12345 {REAL} port 46039 [preauth]"
    event = classify(message)
    assert event is not None and event.host == REAL and event.user == f"test {FAKE} port 12345"


def test_multiline_injection_does_not_poison_correlator() -> None:
    """A fake 'Connection from' announcement cannot come from the client: it would have
    to be a separate log entry of the same sshd pid, which the client cannot write."""
    c = Correlator()
    events = c.feed(f"Invalid user x Connection from {FAKE} port 1 from {REAL} port 2", 5)
    assert [e.host for e in events] == [REAL]
    assert [e.host for e in c.feed("Disconnecting: Too many authentication failures [preauth]", 5)] == [REAL]


def test_hostname_is_not_resolved() -> None:
    event = classify("User root from attacker.example.net not allowed because not listed in AllowUsers")
    assert event is not None and event.host == "attacker.example.net"


def test_mapped_and_zone_addresses_normalise() -> None:
    assert _blamed(f"Invalid user x from ::ffff:{REAL} port 1") == REAL
    assert _blamed("Invalid user x from fe80::1%eth0 port 1") == "fe80::1"


# Hypothesis: any user name of up to 100 characters (auth.c truncates to %.100s) over an
# alphabet rich in the separators sshd uses.
_PIECES = st.sampled_from([
    " ", "from", "port", "ssh2", "ssh1", ":", ": ", "[preauth]", "invalid user ",
    "authenticating user ", FAKE, f"::ffff:{FAKE}", "2001:db8::bad", "22", "(", ")", ",",
    '"', "via", "Too many authentication failures", "Change of username or service not allowed",
    "x", "é", "\t",
])
_USER = st.lists(_PIECES, max_size=25).map("".join).filter(lambda s: len(s) <= 100)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=_USER, text=_USER, idx=st.integers(0, len(TEMPLATES) - 1), v6=st.booleans())
def test_random_user_names_never_move_blame(user: str, text: str, idx: int, v6: bool) -> None:
    template, ambiguous = TEMPLATES[idx]
    addr = REAL6 if v6 else REAL
    message = template.format(u=user, t=text, a=addr)
    event = classify(message)
    host = event.host if event is not None else None
    assert host != FAKE and host != "2001:db8::bad"
    if ambiguous:
        assert host in (addr, None)
    else:
        assert host == addr
        assert event is not None and event.kind is not Kind.ACCEPTED
