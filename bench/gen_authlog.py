#!/usr/bin/env python3
"""Write a deterministic, realistic sshd auth.log for benchmarks.

    python3 bench/gen_authlog.py [--lines 1000000] [--attackers 40000] [--seed 1] OUT

The mix follows what an Internet-facing host logs (shapes from real OpenSSH 9.2 output
captured in tests/data/sshd_golden.jsonl; proportions are a judgement, not a measurement):
password guessing with invalid and valid user names (with the pam_unix lines sshd's PAM
stack adds), root guessing up to MaxAuthTries, scanners that close before or during key
exchange, HTTP sent to port 22, old clients failing negotiation, pre-auth disconnects,
OpenSSH 9.8+ `sshd-session` hosts logging LoginGraceTime timeouts and PerSourcePenalties
drops, and benign traffic: admins' key logins and logouts, cron, sudo and logind lines.
Attackers are drawn with a heavy tail (a few very busy, most seen a handful of times),
about 5% IPv6. The same arguments always give the same bytes.
"""

from __future__ import annotations

import argparse
import random
import time

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
USERS = ("admin", "test", "user", "ubuntu", "oracle", "postgres", "git", "guest", "ftpuser",
         "deploy", "pi", "support", "mysql", "hadoop", "jenkins", "www-data", "ec2-user",
         "centos", "dev", "steam", "minecraft", "nagios", "tomcat", "student", "a b", "")
VALID = ("root", "alice", "bob")
ADMINS = ("alice", "bob")
OFFERS = ("diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1,diffie-hellman-group1-sha1",
          "ssh-rsa,ssh-dss", "aes128-cbc,3des-cbc")


class Writer:
    def __init__(self, out, seed: int, hosts: int = 3):
        self.out = out
        self.rng = random.Random(seed)
        self.t = time.mktime((2025, 3, 1, 0, 0, 0, 0, 0, -1))
        self.hosts = [f"srv{i}" for i in range(hosts)]
        self.pid = 1000
        self.lines = 0

    def stamp(self) -> str:
        self.t += self.rng.expovariate(1 / 0.05)
        tm = time.localtime(self.t)
        return f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"

    def emit(self, host: str, prog: str, pid: int, msg: str) -> None:
        self.out.write(f"{self.stamp()} {host} {prog}[{pid}]: {msg}\n")
        self.lines += 1

    def next_pid(self) -> int:
        self.pid = self.pid + 1 if self.pid < 4_000_000 else 1000
        return self.pid


def attacker_pool(rng: random.Random, n: int) -> list[str]:
    pool = []
    seen = set()
    while len(pool) < n:
        if rng.random() < 0.05:
            addr = f"2001:db8:{rng.randrange(1, 0xffff):x}:{rng.randrange(0xffff):x}::{rng.randrange(1, 0xffff):x}"
        else:
            addr = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if addr not in seen:
            seen.add(addr)
            pool.append(addr)
    return pool


def session(w: Writer, attackers: list[str]) -> None:
    rng = w.rng
    host = rng.choice(w.hosts)
    modern = host == w.hosts[-1]  # one host runs OpenSSH 9.8+ (sshd-session)
    prog = "sshd-session" if modern else "sshd"
    pid = w.next_pid()
    # Heavy tail: index ~ attackers * u^3 makes low indices (busy attackers) common.
    a = attackers[int(len(attackers) * rng.random() ** 3)]
    port = rng.randrange(1024, 65535)
    roll = rng.random()
    if roll < 0.34:  # invalid user, one password guess
        u = rng.choice(USERS)
        w.emit(host, prog, pid, f"Invalid user {u} from {a} port {port}")
        w.emit(host, prog, pid, "pam_unix(sshd:auth): check pass; user unknown")
        w.emit(host, prog, pid, "pam_unix(sshd:auth): authentication failure; logname= uid=0 "
                                f"euid=0 tty=ssh ruser= rhost={a}")
        w.emit(host, prog, pid, f"Failed password for invalid user {u} from {a} port {port} ssh2")
        if rng.random() < 0.5:
            w.emit(host, prog, pid, f"Received disconnect from {a} port {port}:11: Bye Bye [preauth]")
            w.emit(host, prog, pid, f"Disconnected from invalid user {u} {a} port {port} [preauth]")
        else:
            w.emit(host, prog, pid, f"Connection closed by invalid user {u} {a} port {port} [preauth]")
    elif roll < 0.50:  # valid user (root) guessing up to MaxAuthTries
        u = rng.choice(VALID)
        tries = rng.randrange(1, 7)
        for _ in range(min(tries, 6)):
            w.emit(host, prog, pid, "pam_unix(sshd:auth): authentication failure; logname= uid=0 "
                                    f"euid=0 tty=ssh ruser= rhost={a}  user={u}")
            w.emit(host, prog, pid, f"Failed password for {u} from {a} port {port} ssh2")
        if tries >= 6:
            w.emit(host, prog, pid, f"error: maximum authentication attempts exceeded for {u} "
                                    f"from {a} port {port} ssh2 [preauth]")
            w.emit(host, prog, pid, f"Disconnecting authenticating user {u} {a} port {port}: "
                                    "Too many authentication failures [preauth]")
        else:
            w.emit(host, prog, pid, f"Connection closed by authenticating user {u} {a} port {port} [preauth]")
    elif roll < 0.62:  # port scanner: connect and close
        w.emit(host, "sshd", pid, "error: kex_exchange_identification: Connection closed by remote host")
        w.emit(host, "sshd", pid, f"Connection closed by {a} port {port}")
    elif roll < 0.66:  # HTTP on the ssh port
        w.emit(host, "sshd", pid, "error: kex_exchange_identification: client sent invalid "
                                  'protocol identifier "GET / HTTP/1.1"')
        w.emit(host, "sshd", pid, f"banner exchange: Connection from {a} port {port}: invalid format")
    elif roll < 0.72:  # old client / scanner failing negotiation
        w.emit(host, prog, pid, f"Unable to negotiate with {a} port {port}: no matching key "
                                f"exchange method found. Their offer: {rng.choice(OFFERS)} [preauth]")
    elif roll < 0.78:  # pre-auth disconnects
        if rng.random() < 0.5:
            w.emit(host, prog, pid, f"Connection reset by {a} port {port} [preauth]")
        else:
            w.emit(host, prog, pid, f"Connection closed by {a} port {port} [preauth]")
    elif roll < 0.81 and modern:  # OpenSSH 9.8+: grace timeout and penalty drops
        w.emit(host, "sshd", w.pid, f"Timeout before authentication for connection from {a} "
                                    f"to 192.0.2.1, pid = {pid}")
        w.emit(host, "sshd", 900, f"drop connection #{rng.randrange(10)} from [{a}]:{port} on "
                                  "[192.0.2.1]:22 penalty: failed authentication")
    elif roll < 0.83:
        w.emit(host, "sshd", 900, f"drop connection #{rng.randrange(10, 30)} from [{a}]:{port} "
                                  "on [192.0.2.1]:22 past MaxStartups")
    else:  # benign: an admin's key login and logout, plus unrelated programs
        admin = rng.choice(ADMINS)
        src = f"198.51.100.{rng.randrange(1, 20)}"
        w.emit(host, prog, pid, f"Accepted publickey for {admin} from {src} port {port} ssh2: "
                                "ED25519 SHA256:Jfl0R6JZnzYipDdYWi6whkIduDxeZ/tHR+Q5WD1R0EQ")
        w.emit(host, prog, pid, f"pam_unix(sshd:session): session opened for user {admin}(uid=1000) by (uid=0)")
        w.emit(host, "systemd-logind", 500, f"New session {pid} of user {admin}.")
        if rng.random() < 0.3:
            w.emit(host, "sudo", pid + 1, f"{admin} : TTY=pts/0 ; PWD=/home/{admin} ; USER=root ; "
                                          "COMMAND=/usr/bin/systemctl status ssh")
        w.emit(host, "CRON", pid + 2, "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)")
        w.emit(host, prog, pid, f"Received disconnect from {src} port {port}:11: disconnected by user")
        w.emit(host, prog, pid, f"Disconnected from user {admin} {src} port {port}")
        w.emit(host, prog, pid, f"pam_unix(sshd:session): session closed for user {admin}")


def generate(path: str, lines: int, attackers: int, seed: int) -> int:
    rng = random.Random(seed)
    pool = attacker_pool(rng, attackers)
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as out:
        w = Writer(out, seed)
        while w.lines < lines:
            session(w, pool)
    return w.lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--attackers", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    n = generate(args.out, args.lines, args.attackers, args.seed)
    print(f"wrote {n} lines to {args.out}")


if __name__ == "__main__":
    main()
