#!/usr/bin/env python3
"""A second auth.log generator, written apart from gen_authlog.py so that the scan benchmark
is not judged only on the log its fast paths were tuned on.

    python3 bench/gen_authlog2.py [--lines 1000000] [--seed 2] [--stamp iso|classic] OUT

Where gen_authlog.py writes one connection after the other, this one simulates: connections
are opened by actors at random times and each line of each connection is scheduled some
time after the previous one, so the lines of hundreds of live connections interleave as in
a real busy log. Differences that matter to a parser:
  - timestamps in rsyslog's RSYSLOG_FileFormat (ISO 8601 with microseconds and the UTC
    offset), the default of Debian 12 and later; --stamp classic gives "Mmm dd hh:mm:ss";
  - another family mix: more scanners and key-exchange failures, public-key and
    keyboard-interactive failures, "authenticating user" closes, MaxAuthTries, PAM's
    "more authentication failures" summaries and relays, OpenSSH 9.8+ timeouts and
    penalties, AllowUsers refusals, a few wordings only old releases wrote;
  - user names from a long-tailed (Zipf) vocabulary of ~60,000, some with spaces, dots,
    digits, UTF-8 or nothing at all;
  - about a fifth of the attackers on IPv6, clustered in /64s and /48s, plus IPv4-mapped;
  - about a third of the lines from other programs: kernel firewall logs, cron, systemd,
    logind, sudo, postfix and dovecot (whose failures name addresses too), named.
Message shapes follow OpenSSH 9.x and the other daemons as they appear in logs; the
proportions are a judgement, not a measurement. The same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import random
import time
from collections.abc import Callable, Iterator

HOST = "bastion-eu1"
START = 1_749_542_400.0  # 2025-06-10 08:00:00 UTC
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_FIRST = ("admin", "user", "test", "oracle", "postgres", "ubuntu", "debian", "centos", "pi",
          "git", "gitlab", "jenkins", "deploy", "ansible", "hadoop", "spark", "kafka", "elastic",
          "mysql", "redis", "mongo", "ftp", "ftpuser", "www", "web", "nginx", "apache", "tomcat",
          "support", "sales", "info", "guest", "student", "teacher", "minecraft", "steam",
          "ts3", "teamspeak", "vagrant", "docker", "k8s", "kube", "openvpn", "backup", "nas",
          "zabbix", "nagios", "grafana", "prometheus", "odoo", "erp", "sap", "db2", "sybase")
_NAMES = ("anna", "boris", "carlos", "dmitri", "elena", "fatima", "george", "hana", "ivan",
          "jose", "kim", "li", "maria", "nikita", "olga", "pedro", "qing", "raj", "sergei",
          "tomas", "ulla", "viktor", "wei", "xenia", "yusuf", "zoe")
_ODD = ("a b", "admin backup", "", " ", "root ", "Ōsaka", "用户", "süß", "O'Brien",
        "user@example.com", "x" * 32, "-", "$(id)", "..", "from", "port", "ssh2")


def _vocabulary(rng: random.Random, n: int) -> list[str]:
    words: list[str] = list(dict.fromkeys(_FIRST + _NAMES))
    seen = set(words)
    makers: list[Callable[[], str]] = [
        lambda: rng.choice(_FIRST) + str(rng.randrange(1000)),
        lambda: rng.choice(_NAMES) + rng.choice(("", ".", "_")) + rng.choice(_NAMES),
        lambda: rng.choice(_NAMES)[0] + rng.choice(_NAMES) + str(rng.randrange(100)),
        lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                        for _ in range(rng.randrange(3, 14))),
        lambda: rng.choice(_FIRST) + rng.choice(("-", "_", ".")) + rng.choice(_FIRST),
    ]
    while len(words) < n:
        w = rng.choice(makers)()
        if w not in seen:
            seen.add(w)
            words.append(w)
    odd = list(_ODD)
    for i, w in enumerate(odd):  # sprinkle the odd ones among the rare names
        words.insert(len(words) // 3 + i * 997, w)
    return words


class _Zipf:
    """Index i drawn with weight 1/(i+1)^s: a few very common items, a long tail."""

    def __init__(self, rng: random.Random, n: int, s: float):
        self.rng = rng
        self.cum = list(itertools.accumulate(1 / (i + 1) ** s for i in range(n)))

    def __call__(self) -> int:
        return bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])


# First octets of busy scanning networks: a few /8s, not the uniform spread of gen_authlog.
_V4_FIRST = (45, 61, 92, 103, 106, 118, 141, 159, 170, 183, 185, 193, 194, 196, 218, 222)


def _attackers(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    nets64 = [f"2a0{rng.randrange(1, 10)}:{rng.randrange(0x1000, 0xffff):x}:"
              f"{rng.randrange(0xffff):x}:{rng.randrange(0xffff):x}" for _ in range(n // 60 + 1)]
    nets48 = [f"240e:{rng.randrange(0x100, 0xfff):x}:{rng.randrange(0xffff):x}"
              for _ in range(n // 200 + 1)]
    while len(out) < n:
        r = rng.random()
        if r < 0.12:  # hosts sharing a /64
            a = f"{rng.choice(nets64)}::{rng.randrange(1, 0xffff):x}"
        elif r < 0.19:  # a /48 rotating through its /64s
            a = f"{rng.choice(nets48)}:{rng.randrange(0xffff):x}::{rng.randrange(1, 0xff):x}"
        elif r < 0.20:
            a = (f"::ffff:{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}."
                 f"{rng.randrange(1, 255)}")
        else:
            a = (f"{rng.choice(_V4_FIRST)}.{rng.randrange(256)}.{rng.randrange(256)}."
                 f"{rng.randrange(1, 255)}")
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out


class Log:
    """Lines scheduled by time across live connections, written in time order."""

    def __init__(self, seed: int, stamp: str):
        self.rng = random.Random(seed)
        self.heap: list[tuple[float, int, str, int, str]] = []
        self.seq = itertools.count()
        self.pid = 31_000
        self.iso = stamp == "iso"
        self._second = -1
        self._prefix = ""

    def at(self, t: float, prog: str, pid: int, msg: str) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), prog, pid, msg))

    def new_pid(self) -> int:
        self.pid = self.pid + self.rng.randrange(1, 40)
        if self.pid > 4_194_304:  # pid_max: pids wrap and get reused
            self.pid = 300 + self.pid % 1000
        return self.pid

    def stamp(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._second = second
            tm = time.gmtime(second)
            if self.iso:
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
            else:
                self._prefix = (f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} "
                                f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}")
        if self.iso:
            return f"{self._prefix}.{int((t - second) * 1e6):06d}+00:00"
        return self._prefix

    def drain_until(self, t: float) -> Iterator[str]:
        heap = self.heap
        while heap and heap[0][0] <= t:
            when, _, prog, pid, msg = heapq.heappop(heap)
            tag = f"{prog}[{pid}]" if pid else prog
            yield f"{self.stamp(when)} {HOST} {tag}: {msg}\n"


class Actors:
    """Each method schedules one connection (or one burst of noise) starting at t."""

    def __init__(self, log: Log, attackers: list[str], users: list[str]):
        self.log = log
        self.rng = log.rng
        self.attackers = attackers
        self.pick_attacker = _Zipf(self.rng, len(attackers), 1.05)
        self.users = users
        self.pick_user = _Zipf(self.rng, len(users), 0.9)
        self.admins = [("alice", "198.51.100.23"), ("bob", "2001:db8:40::17"),
                       ("deploy", "203.0.113.80")]

    def _conn(self, prog: str = "sshd") -> tuple[int, str, int, str]:
        return (self.log.new_pid(), self.attackers[self.pick_attacker()],
                self.rng.randrange(1025, 65536), prog)

    def _lines(self, t: float, prog: str, pid: int, msgs: list[str], gap: float) -> float:
        rng = self.rng
        for msg in msgs:
            self.log.at(t, prog, pid, msg)
            t += rng.expovariate(1 / gap)
        return t

    def guesser(self, t: float) -> None:
        pid, a, p, prog = self._conn()
        u = self.users[self.pick_user()]
        rng = self.rng
        msgs = [f"Invalid user {u} from {a} port {p}"]
        tries = rng.choice((1, 1, 1, 2, 3, 6))
        for _ in range(tries):
            msgs += ["pam_unix(sshd:auth): check pass; user unknown",
                     ("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                     f"tty=ssh ruser= rhost={a}"),
                     f"Failed password for invalid user {u} from {a} port {p} ssh2"]
        if tries == 6:
            msgs.append(f"error: maximum authentication attempts exceeded for invalid user {u} "
                        f"from {a} port {p} ssh2 [preauth]")
            msgs.append(f"Disconnecting invalid user {u} {a} port {p}: Too many authentication "
                        "failures [preauth]")
        elif rng.random() < 0.6:
            msgs.append(f"Received disconnect from {a} port {p}:11: Bye Bye [preauth]")
            msgs.append(f"Disconnected from invalid user {u} {a} port {p} [preauth]")
        else:
            msgs.append(f"Connection closed by invalid user {u} {a} port {p} [preauth]")
        self._lines(t, prog, pid, msgs, 1.2)

    def rooter(self, t: float) -> None:
        pid, a, p, prog = self._conn()
        rng = self.rng
        tries = rng.randrange(1, 4)
        msgs = []
        for _ in range(tries):
            msgs += [("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                     f"tty=ssh ruser= rhost={a}  user=root"),
                     f"Failed password for root from {a} port {p} ssh2"]
        if tries > 1:
            msgs.append(f"PAM {tries - 1} more authentication failure{'s' if tries > 2 else ''}; "
                        f"logname= uid=0 euid=0 tty=ssh ruser= rhost={a}  user=root")
        msgs.append(f"Connection reset by authenticating user root {a} port {p} [preauth]")
        self._lines(t, prog, pid, msgs, 2.0)

    def keyprobe(self, t: float) -> None:
        pid, a, p, prog = self._conn()
        rng = self.rng
        u = rng.choice(("root", "git", "ubuntu", "admin", self.users[self.pick_user()]))
        fp = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                     for _ in range(43))
        msgs = []
        if rng.random() < 0.4:
            msgs.append(f"Failed publickey for {u} from {a} port {p} ssh2: "
                        f"{rng.choice(('RSA', 'ED25519', 'ECDSA'))} SHA256:{fp}")
        msgs.append(f"Connection closed by authenticating user {u} {a} port {p} [preauth]")
        self._lines(t, prog, pid, msgs, 0.3)

    def kbdint(self, t: float) -> None:
        pid, a, p, prog = self._conn()
        u = self.users[self.pick_user()]
        self._lines(t, prog, pid, [
            f"Invalid user {u} from {a} port {p}",
            f"error: PAM: Authentication failure for illegal user {u} from {a}",
            f"Failed keyboard-interactive/pam for invalid user {u} from {a} port {p} ssh2",
            f"Connection closed by invalid user {u} {a} port {p} [preauth]"], 1.5)

    def scanner(self, t: float) -> None:
        pid, a, p, prog = self._conn()
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            msgs = ["error: kex_exchange_identification: Connection closed by remote host",
                    f"Connection closed by {a} port {p}"]
        elif r < 0.45:
            msgs = ["error: kex_exchange_identification: read: Connection reset by peer",
                    f"Connection reset by {a} port {p}"]
        elif r < 0.55:
            msgs = [("error: kex_exchange_identification: client sent invalid protocol identifier "
                    f"\"{rng.choice(('GET / HTTP/1.1', 'MGLNDD_0.0.0.0_22', 'SSH-2.0-Go'))}\""),
                    f"banner exchange: Connection from {a} port {p}: invalid format"]
        elif r < 0.75:
            offer = rng.choice(("diffie-hellman-group1-sha1,diffie-hellman-group14-sha1",
                                "ssh-rsa,ssh-dss", "aes128-cbc,3des-cbc,aes256-cbc"))
            what = rng.choice(("key exchange method", "host key type", "cipher"))
            msgs = [(f"Unable to negotiate with {a} port {p}: no matching {what} found. "
                    f"Their offer: {offer} [preauth]")]
        elif r < 0.85:
            msgs = [f"Did not receive identification string from {a} port {p}"]
        elif r < 0.93:
            msgs = [(f"ssh_dispatch_run_fatal: Connection from {a} port {p}: message "
                    "authentication code incorrect [preauth]")]
        else:
            msgs = [f"Bad protocol version identification '\\026\\003\\001' from {a} port {p}"]
        self._lines(t, prog, pid, msgs, 0.2)

    def modern(self, t: float) -> None:
        """OpenSSH 9.8+: sshd-session lines and the listener's penalties."""
        pid, a, p, _ = self._conn()
        rng = self.rng
        if rng.random() < 0.5:
            self._lines(t + 120, "sshd-session", pid, [
                (f"Timeout before authentication for connection from {a} to 10.0.0.5, "
                f"pid = {pid}")], 1)
        else:
            self._lines(t, "sshd", 977, [
                (f"drop connection #{rng.randrange(1, 10)} from [{a}]:{p} on [10.0.0.5]:22 "
                "penalty: failed authentication")], 1)

    def refused(self, t: float) -> None:
        pid, a, p, prog = self._conn()
        u = self.rng.choice(("root", "oracle", "postgres"))
        self._lines(t, prog, pid, [
            f"User {u} from {a} not allowed because not listed in AllowUsers",
            f"Connection closed by invalid user {u} {a} port {p} [preauth]"], 0.5)

    def oldstyle(self, t: float) -> None:
        """Wordings of old releases: address-less lines the correlator has to place."""
        pid, a, p, prog = self._conn()
        self._lines(t, prog, pid, [
            f"Failed password for root from {a} port {p} ssh2",
            "Disconnecting: Too many authentication failures for root [preauth]",
            f"Connection closed by {a} port {p} [preauth]"], 0.8)

    def admin(self, t: float) -> None:
        rng = self.rng
        pid = self.log.new_pid()
        u, a = rng.choice(self.admins)
        p = rng.randrange(1025, 65536)
        fp = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                     for _ in range(43))
        sid = rng.randrange(1, 9999)
        t = self._lines(t, "sshd", pid, [
            f"Accepted publickey for {u} from {a} port {p} ssh2: ED25519 SHA256:{fp}",
            f"pam_unix(sshd:session): session opened for user {u}(uid=1000) by (uid=0)"], 0.05)
        self.log.at(t, "systemd-logind", 612, f"New session {sid} of user {u}.")
        self.log.at(t + 0.01, "systemd", 1, f"Started session-{sid}.scope - Session {sid} of "
                    f"User {u}.")
        if rng.random() < 0.3:
            self.log.at(t + 5, "sudo", 0, f"   {u} : TTY=pts/0 ; PWD=/home/{u} ; USER=root ; "
                        "COMMAND=/usr/bin/systemctl status nginx")
        t += rng.expovariate(1 / 900)
        self._lines(t, "sshd", pid, [
            f"Received disconnect from {a} port {p}:11: disconnected by user",
            f"Disconnected from user {u} {a} port {p}",
            f"pam_unix(sshd:session): session closed for user {u}"], 0.02)
        self.log.at(t + 0.1, "systemd-logind", 612, f"Session {sid} logged out. Waiting for "
                    "processes to exit.")

    def noise(self, t: float) -> None:
        rng = self.rng
        r = rng.random()
        a = self.attackers[self.pick_attacker()]
        if r < 0.45:
            proto = rng.choice(("TCP", "TCP", "UDP"))
            self.log.at(t, "kernel", 0, f"[{(t - START) + 91234.5:.6f}] [UFW BLOCK] IN=eth0 OUT= "
                        "MAC=52:54:00:12:34:56:fe:54:00:12:34:56:08:00 SRC="
                        f"{a if ':' not in a else '192.0.2.1'} DST=10.0.0.5 LEN=44 TOS=0x00 "
                        f"PREC=0x00 TTL=241 ID=54321 PROTO={proto} SPT={rng.randrange(1024, 65535)} "
                        f"DPT={rng.choice((23, 3389, 445, 5900, 8080, 6379))} WINDOW=1024 RES=0x00 "
                        "SYN URGP=0")
        elif r < 0.6:
            pid = self.log.new_pid()
            self.log.at(t, "CRON", pid, "pam_unix(cron:session): session opened for user "
                        "root(uid=0) by (uid=0)")
            self.log.at(t, "CRON", pid, "(root) CMD (command -v debian-sa1 > /dev/null && "
                        "debian-sa1 1 1)")
            self.log.at(t + 0.3, "CRON", pid, "pam_unix(cron:session): session closed for user root")
        elif r < 0.75:
            n = rng.randrange(100, 999)
            self.log.at(t, "postfix/smtpd", 4000 + n, f"connect from unknown[{a}]")
            if rng.random() < 0.5:
                self.log.at(t + 1, "postfix/smtpd", 4000 + n, f"warning: unknown[{a}]: SASL "
                            "LOGIN authentication failed: UGFzc3dvcmQ6")
            self.log.at(t + 2, "postfix/smtpd", 4000 + n, f"disconnect from unknown[{a}] ehlo=1 "
                        "auth=0/1 quit=1 commands=2/3")
        elif r < 0.85:
            self.log.at(t, "dovecot", 0, "imap-login: Disconnected: Connection closed (auth "
                        f"failed, 1 attempts in 2 secs): user=<{self.users[self.pick_user()]}>, "
                        f"method=PLAIN, rip={a}, lip=10.0.0.5, TLS, session=<x{rng.randrange(10**8)}>")
        elif r < 0.93:
            self.log.at(t, "named", 733, f"client @0x7f{rng.randrange(16**8):08x} {a}#"
                        f"{rng.randrange(1024, 65535)} (example.com): query (cache) "
                        "'example.com/ANY/IN' denied")
        else:
            self.log.at(t, "systemd", 1, rng.choice((
                "Starting apt-daily.service - Daily apt download activities...",
                "Finished logrotate.service - Rotate log files.",
                "Started certbot.service - Certbot.",
                "run-docker-runtime\\x2drunc-moby.mount: Deactivated successfully.")))


# Connection kinds per started connection (weights), and the rate of starts per second.
MIX: tuple[tuple[str, float], ...] = (
    ("guesser", 24), ("rooter", 9), ("keyprobe", 9), ("kbdint", 3), ("scanner", 22),
    ("modern", 4), ("refused", 2), ("oldstyle", 1), ("admin", 1), ("noise", 40),
)
RATE = 20.0


def generate(path: str, lines: int, seed: int = 2, stamp: str = "iso",
             attackers: int = 60_000, users: int = 60_000) -> None:
    """Write `lines` lines (exactly) to `path`."""
    log = Log(seed, stamp)
    rng = log.rng
    actors = Actors(log, _attackers(rng, attackers), _vocabulary(rng, users))
    names, weights = zip(*MIX, strict=True)
    cum = list(itertools.accumulate(weights))
    makers = [getattr(actors, n) for n in names]
    t = START
    written = 0
    buf: list[str] = []
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        log.at(t, "sshd", 977, "Server listening on 0.0.0.0 port 22.")
        log.at(t, "sshd", 977, "Server listening on :: port 22.")
        while written < lines:
            for _ in range(256):
                t += rng.expovariate(RATE)
                makers[bisect.bisect_left(cum, rng.random() * cum[-1])](t)
            # Everything scheduled up to a minute before the newest start is final: no
            # connection schedules a line more than that before its own later lines
            # (the 120 s timeouts are scheduled ahead, so they only come later).
            for line in log.drain_until(t - 60):
                buf.append(line)
                written += 1
                if written >= lines:
                    break
            if len(buf) > 4096 or written >= lines:
                out.write("".join(buf))
                buf.clear()
        for line in log.drain_until(float("inf")):
            if written >= lines:
                break
            out.write(line)
            written += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--stamp", choices=("iso", "classic"), default="iso")
    args = ap.parse_args()
    generate(args.out, args.lines, args.seed, args.stamp)


if __name__ == "__main__":
    main()
