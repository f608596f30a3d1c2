"""`sshguardd demo`: watch the real daemon work on a throwaway copy of this host.

It builds a Sandbox (private mount, network and PID namespaces; copy-on-write /etc, /var,
/root and /home; a private journald; a real sshd on the sandbox's loopback), runs the
daemon exactly as a service would (`sshguardd run`, default config paths, only the sshd
restart command set for a host without systemd), and then:

1. shows the start-up check repair the stock sshd config and lock root's password;
2. drifts the config (`PermitRootLogin yes` with `sed -i`) and unlocks root (`chpasswd`),
   and shows the repairs;
3. brute-forces sshd from three addresses (two IPv4, one IPv6) with the OpenSSH client,
   shows the bans arrive and that banned sources are dropped while an admin with a key
   still gets in;
4. prints the daemon's metrics, its nft table and `sshguardd bans`.

Nothing outside the sandbox changes (checked at the end); Ctrl-C tears it all down. With
--non-interactive it does not pause between steps and exits 1 if any check failed.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sshguardd import cli

SERVER_V4, SERVER_V6 = "203.0.113.1", "2001:db8::1"  # documentation ranges (RFC 5737/3849)
ATTACKERS = ("192.0.2.10", "198.51.100.23", "2001:db8:bad::7")
ADMIN_SRC, ADMIN_USER = "192.0.2.200", "demo-admin"
NOTIFY_PATH = "/run/sshguardd-demo.notify"
GUESSES = ("admin", "oracle", "test", "ubuntu", "postgres", "root", "git", "pi")
MAX_ATTEMPTS = 15
HOST_FILES = ("/etc/ssh/sshd_config", "/etc/shadow", "/etc/passwd")
DEMO_CONFIG = """\
# sshguardd demo: every value is the production default except the sshd restart command,
# since the sandbox has no systemd. sshd re-executes itself and rereads its config on SIGHUP.
[drift]
restart_command = ["pkill", "-HUP", "-F", "/run/sshd.pid"]
"""
TOTAL_PHASES = 5
PROTECTED = ("permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication",
             "permitemptypasswords")  # the default policy's sshd keywords


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="watch sshguardd repair drift and ban attackers in a throwaway sandbox",
        description="Runs the real daemon in private namespaces with copy-on-write /etc and "
        "/var, a private journal and a real sshd on loopback; drifts sshd_config and root's "
        "password, brute-forces sshd, and shows what sshguardd detects, bans and repairs. "
        "The host is not changed. Needs root.")
    p.add_argument("--non-interactive", action="store_true",
                   help="do not pause between steps; exit 1 if a check fails")
    p.add_argument("--verbose", "-v", action="store_true", help="also show the daemon's log")
    p.add_argument("--workdir", metavar="DIR", default="/var/tmp",
                   help="where the sandbox keeps its copy-on-write layers (default /var/tmp)")
    p.set_defaults(func=run)


REQUIRED = ("unshare", "nsenter", "ip", "nft", "ssh", "ssh-keygen", "journalctl", "pkill",
            "timeout", "useradd", "chpasswd", "sed")


def run(args) -> int:
    from sshguardd.demo.view import View

    view = View()
    if os.geteuid() != 0:
        print("sshguardd demo: needs root, to build private namespaces (try: sudo sshguardd "
              "demo); it changes nothing outside them", file=sys.stderr)
        return cli.EX_UNAVAILABLE
    missing = [t for t in REQUIRED if shutil.which(t) is None]
    missing += [p for p in ("/usr/sbin/sshd", "/lib/systemd/systemd-journald")
                if not os.access(p, os.X_OK)]
    if missing:
        print("sshguardd demo: missing " + ", ".join(missing) + " (Debian: apt-get install "
              "openssh-server openssh-client nftables iproute2 systemd passwd procps)",
              file=sys.stderr)
        return cli.EX_UNAVAILABLE
    demo = Demo(view, interactive=not args.non_interactive and sys.stdin.isatty(),
                verbose=args.verbose, workdir=Path(args.workdir))
    try:
        demo.play()
    except KeyboardInterrupt:
        view.end_progress()
        print("\ninterrupted: tearing the sandbox down", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - report, clean up, and fail
        view.fail(f"the demo broke: {type(exc).__name__}: {exc}")
        demo.show_daemon_log()
    finally:
        # A second Ctrl-C must not cut the teardown short and leave layers behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            demo.cleanup()
        finally:
            signal.signal(signal.SIGINT, previous)
    host_ok = demo.host_unchanged()
    view.check(host_ok, "the host's sshd_config, shadow and passwd are unchanged")
    view.title(f"demo result: {'ok' if not view.failures else 'FAILED'} "
               f"({len(view.passes)} checks passed, {len(view.failures)} failed)")
    for failure in view.failures:
        print(f"  ✗ {failure}")
    return cli.EX_OK if not view.failures else cli.EX_FINDING


@dataclass
class Attacker:
    address: str
    attempts: int = 0
    dropped: bool = False  # a connection attempt timed out: the kernel drops it


@dataclass
class Feed:
    """What the journal said so far (filled by the feed thread, read by the main thread)."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str, **match: str) -> int:
        with self.lock:
            return sum(1 for a in self.alerts if a.get("SSHGUARDD_ALERT") == kind
                       and all(str(a.get(k, "")).lower() == v.lower() for k, v in match.items()))


class Demo:
    def __init__(self, view: Any, *, interactive: bool, verbose: bool, workdir: Path) -> None:
        self.view = view
        self.interactive = interactive
        self.verbose = verbose
        self.workdir = workdir
        self.sb: Any = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.feed = Feed()
        self.attackers = {a: Attacker(a) for a in ATTACKERS}
        self.daemon_log: collections.deque[str] = collections.deque(maxlen=200)
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.notify_sock: socket.socket | None = None
        self.host_before = {p: _digest(p) for p in HOST_FILES}
        self.stop_attacks = False
        self._counted, self._counted_at = 0.0, 0.0
        self._tmp: Path | None = None

    # -- the script --------------------------------------------------------------------

    def play(self) -> None:
        v = self.view
        v.title("sshguardd demo: the real daemon, on a throwaway copy of this host")
        self.phase_sandbox()
        self.pause("start sshguardd on this stock configuration")
        self.phase_startup()
        self.pause("drift the config and unlock root")
        self.phase_drift()
        self.pause("brute-force sshd from three addresses")
        self.phase_bruteforce()
        self.pause("look at the metrics")
        self.phase_metrics()

    def pause(self, what: str) -> None:
        if self.interactive:
            self.view.end_progress()
            input(f"\n  Press Enter to {what} (Ctrl-C quits) ")

    def phase_sandbox(self) -> None:
        from sshguardd.demo.sandbox import Sandbox, wait_for

        v = self.view
        v.phase(1, TOTAL_PHASES, "A sandbox", """
            Private mount, network and PID namespaces; copy-on-write /etc, /var, /root and
            /home; a private journald; a real OpenSSH server on the sandbox's loopback.""")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix="sshguardd-demo-", dir=self.workdir))
        self.sb = sb = Sandbox(self._tmp, overlays=("/var", "/root", "/home"))
        sb.start()
        v.step(f"namespaces up (holder pid {sb.pid}), journald running, lo up")
        for addr in (SERVER_V4, SERVER_V6, ADMIN_SRC, *ATTACKERS):
            sb.add_address(addr)
        v.step(f"server {SERVER_V4} / {SERVER_V6}, admin {ADMIN_SRC}, "
               f"attackers {', '.join(ATTACKERS)}")
        sb.run(["useradd", "--create-home", "--shell", "/bin/sh", ADMIN_USER], check=True)
        key = f"/home/{ADMIN_USER}/.ssh/id_ed25519"
        sb.run(["install", "-d", "-m", "700", "-o", ADMIN_USER, f"/home/{ADMIN_USER}/.ssh"],
               check=True)
        sb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo-admin", "-f", key],
               check=True)
        sb.run(["cp", f"{key}.pub", f"/home/{ADMIN_USER}/.ssh/authorized_keys"], check=True)
        sb.run(["chown", "-R", f"{ADMIN_USER}:", f"/home/{ADMIN_USER}/.ssh"], check=True)
        v.step(f"user {ADMIN_USER} with an SSH key (so key-only login cannot lock the admin out)")
        sshd = sb.start_sshd(listen=("0.0.0.0", "::"))
        v.step(f"sshd (stock Debian config) listening on port 22, pid {sb.inner_pid(sshd)}")
        self.before = {k: self._effective(k) for k in PROTECTED}
        self.before["root password"] = "locked" if self._root_locked() else "usable"
        v.detail("as this host's packages ship it, sshd would use:\n" + "\n".join(
            f"{k} {val}" for k, val in self.before.items()))
        self._start_feed()

    def phase_startup(self) -> None:
        from sshguardd.demo.sandbox import wait_for

        v = self.view
        v.phase(2, TOTAL_PHASES, "The start-up check", """
            sshguardd starts as the service would: `sshguardd run`, default paths. Its
            default policy: PermitRootLogin no, PasswordAuthentication no,
            KbdInteractiveAuthentication no, PermitEmptyPasswords no, root's password
            locked. At start it judges the files and repairs what violates the policy.""")
        cfg = self.sb.path("/etc/sshguardd/config.toml")
        cfg.parent.mkdir(mode=0o755, exist_ok=True)
        cfg.write_text(DEMO_CONFIG)
        self._start_daemon()
        wait_for(lambda: self.ready.is_set() or self._daemon_died(), 60,
                 what="the daemon to report READY=1")
        if self._daemon_died():
            raise RuntimeError(f"sshguardd run exited {self.daemon.returncode}")  # type: ignore[union-attr]
        v.ok(f"`sshguardd run` is up (pid {self.sb.inner_pid(self.daemon)}) and told "
             "the service manager READY=1")
        drifted = [k for k in PROTECTED if self.before.get(k) != "no"]
        try:
            wait_for(lambda: all(self.feed.count("repaired", SETTING=k) for k in drifted)
                     and self._policy_holds(), 30, interval=0.1, what="the start-up repairs")
        except TimeoutError:
            pass
        for k in drifted:
            v.check(self.feed.count("repaired", SETTING=k) > 0,
                    f"{k} {self.before[k]} was repaired at start-up (journal alert)")
        self._check_policy_holds("after the start-up check")

    def phase_drift(self) -> None:
        from sshguardd.demo.sandbox import wait_for

        v = self.view
        v.phase(3, TOTAL_PHASES, "Drift", """
            Someone re-enables root logins with `sed -i` (a temp file renamed over
            sshd_config) and gives root a password with chpasswd (shadow-utils' lock,
            /etc/shadow+ and a rename). The inotify watcher sees both.""")
        before = self.feed.count("repaired")
        self.sb.run(["sed", "-i", "-E", r"s/^#?PermitRootLogin.*/PermitRootLogin yes/",
                     "/etc/ssh/sshd_config"], check=True)
        v.step("sed -i 's/^#?PermitRootLogin.*/PermitRootLogin yes/' /etc/ssh/sshd_config")
        self.sb.run(["chpasswd"], input="root:correct horse battery staple\n", check=True)
        v.step("echo 'root:…' | chpasswd   (root now has a password)")
        try:
            wait_for(lambda: self.feed.count("repaired") >= before + 2
                     and self._effective("permitrootlogin") == "no" and self._root_locked(),
                     30, interval=0.1, what="both repairs")
        except TimeoutError:
            pass
        v.check(self.feed.count("repaired") >= before + 2,
                "both drifts were reported as repaired in the journal",
                f"{self.feed.count('repaired') - before} repaired alert(s)")
        self._check_policy_holds("after the drift")
        line = next((ln for ln in self.sb.path("/etc/ssh/sshd_config").read_text().splitlines()
                     if ln.lower().startswith("permitrootlogin")), "(none)")
        v.detail(f"/etc/ssh/sshd_config now says: {line}")

    def phase_bruteforce(self) -> None:
        from sshguardd.demo.sandbox import wait_for

        v = self.view
        v.phase(4, TOTAL_PHASES, "Brute force", f"""
            Three sources guess user names with the OpenSSH client. Defaults: 5 weighted
            failures within 10 minutes ban the source (/32 or /64) for 10 minutes, in an
            nftables set the kernel expires by itself.""")
        workers = [threading.Thread(target=self._attack, args=(a,), name=f"demo-attack-{a}")
                   for a in self.attackers.values()]
        for w in workers:
            w.start()
        try:
            wait_for(lambda: self._show_attack() or all(not w.is_alive() for w in workers),
                     MAX_ATTEMPTS * 10 + 30, interval=0.25, what="the attackers")
        finally:
            self.stop_attacks = True
            for w in workers:
                w.join()
        self._show_attack()
        v.end_progress()
        for a in self.attackers.values():
            banned = any(_covers(x.get("NETWORK"), a.address) for x in self._alerts("ban"))
            v.check(banned and a.dropped,
                    f"{a.address} banned after {a.attempts} attempts, then dropped by nftables",
                    "banned" if banned else "no ban alert")
        admin = self._ssh(ADMIN_SRC, ADMIN_USER, key=f"/home/{ADMIN_USER}/.ssh/id_ed25519")
        v.check(admin.returncode == 0, f"the admin ({ADMIN_SRC}) still logs in with its key",
                admin.stderr.strip()[-200:])

    def phase_metrics(self) -> None:
        v = self.view
        v.phase(5, TOTAL_PHASES, "What the operator sees", """
            The Prometheus endpoint (127.0.0.1:9822), the nft table sshguardd owns, and
            `sshguardd bans` over the control socket.""")
        text = self._metrics()
        wanted = ("sshguardd_bans_total", "sshguardd_bans_active", "sshguardd_failures_total",
                  "sshguardd_drift_detected_total", "sshguardd_drift_repaired_total",
                  "sshguardd_sshd_restarts_total")
        lines = [ln for ln in text.splitlines() if ln.startswith(wanted)]
        v.check(bool(lines), "metrics served", "no sshguardd_* samples")
        v.detail("\n".join(lines) or "(nothing)")
        bans_total = _sum_samples(text, "sshguardd_bans_total")
        v.check(bans_total >= len(ATTACKERS), f"sshguardd_bans_total counts {bans_total:g} bans")
        table = self.sb.run(["nft", "list", "table", "inet", "sshguardd"])
        v.check(table.returncode == 0, "nft table inet sshguardd exists", table.stderr.strip())
        v.detail(_compact_nft(table.stdout))
        bans = self.sb.run([sys.executable, "-m", "sshguardd", "bans"])
        v.check(bans.returncode == 0, "`sshguardd bans` answers over the control socket",
                bans.stderr.strip()[-300:])
        v.detail(bans.stdout)
        self._stop_daemon()

    # -- the attack --------------------------------------------------------------------

    def _attack(self, a: Attacker) -> None:
        for i in range(MAX_ATTEMPTS):
            if self.stop_attacks or a.dropped:
                return
            a.attempts += 1
            result = self._ssh(a.address, GUESSES[i % len(GUESSES)], timeout=3)
            if result.returncode == 124:
                # The ban landed mid-connection: its packets are dropped and the client
                # waits forever; the next attempt shows how a new connection fares.
                continue
            if "timed out" in result.stderr:
                a.dropped = True  # SYN dropped: the ban is in the kernel
                return

    def _show_attack(self) -> bool:
        parts = []
        for a in self.attackers.values():
            status = "BANNED" if a.dropped else f"{a.attempts:>2}"
            parts.append(f"{a.address} {self.view.bar(a.attempts, 5, 5)} {status}")
        now = time.monotonic()
        if now - self._counted_at >= 0.5:  # what the daemon has detected so far
            self._counted_at = now
            try:
                self._counted = _sum_samples(self._metrics(), "sshguardd_failures_total")
            except OSError:
                pass  # a scrape that failed now shows the last count
        self.view.progress(f"sshguardd counted {self._counted:g} failures · attempts: "
                           + "  ".join(parts))
        return all(a.dropped for a in self.attackers.values())

    def _ssh(self, src: str, user: str, *, key: str | None = None,
             timeout: int = 5) -> subprocess.CompletedProcess[str]:
        server = SERVER_V6 if ":" in src else SERVER_V4
        # timeout(1) inside the sandbox ends a client whose established connection was cut
        # off by a ban (ConnectTimeout covers only connecting): exit status 124.
        argv = ["timeout", "--kill-after=2", str(timeout + 5),
                "ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={timeout}", "-o", "LogLevel=ERROR", "-b", src]
        if key:
            argv += ["-o", "IdentitiesOnly=yes", "-i", key]
        else:
            argv += ["-o", "PreferredAuthentications=password,keyboard-interactive",
                     "-o", "NumberOfPasswordPrompts=0"]
        return self.sb.run([*argv, f"{user}@{server}", "true"], timeout=timeout + 60)

    # -- the daemon and its feeds --------------------------------------------------------

    def _start_daemon(self) -> None:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(self.sb.path(NOTIFY_PATH)))  # a socket file inside the sandbox
        notify.settimeout(0.2)
        self.notify_sock = notify
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env["NOTIFY_SOCKET"] = NOTIFY_PATH
        self.daemon = self.sb.popen([sys.executable, "-m", "sshguardd", "run"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.view.step(f"started `{Path(sys.executable).name} -m sshguardd run` "
                       "(default paths, /etc/sshguardd/config.toml)")
        self._thread(self._read_notify, "demo-notify")
        self._thread(self._read_daemon_log, "demo-daemon-log")

    def _daemon_died(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is not None

    def _stop_daemon(self) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.sb.signal(self.daemon, signal.SIGTERM)
        try:
            code = self.daemon.wait(30)
        except subprocess.TimeoutExpired:
            self.sb.signal(self.daemon, signal.SIGKILL)
            code = self.daemon.wait(10)
        self.view.check(code == 0, "the daemon stopped cleanly on SIGTERM", f"exit status {code}")

    def _read_notify(self) -> None:
        sock = self.notify_sock
        assert sock is not None
        while not self.stop.is_set():
            try:
                data = sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.splitlines():
                if line == "READY=1":
                    self.ready.set()
                elif line.startswith("STATUS=") and self.verbose:
                    self.view.event("status", line[7:], "dim")

    def _read_daemon_log(self) -> None:
        assert self.daemon is not None and self.daemon.stderr is not None
        for raw in self.daemon.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.daemon_log.append(line)
            if self.verbose:
                self.view.event("daemon", line, "dim")

    def _start_feed(self) -> None:
        self.journal = self.sb.popen(["journalctl", "--follow", "--output=json", "--lines=all",
                                      "SYSLOG_IDENTIFIER=sshguardd"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._thread(self._read_journal, "demo-journal")

    def _read_journal(self) -> None:
        assert self.journal.stdout is not None
        for raw in self.journal.stdout:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            kind = entry.get("SSHGUARDD_ALERT")
            if not isinstance(kind, str):
                continue
            with self.feed.lock:
                self.feed.alerts.append(entry)
            self._show_alert(kind, entry)

    def _show_alert(self, kind: str, e: dict[str, Any]) -> None:
        style = {"ban": "red", "unban": "green", "drift": "yellow", "repaired": "green"}.get(
            kind, "magenta")
        message = e.get("MESSAGE")
        if isinstance(message, list):  # journalctl gives binary-safe fields as byte lists
            message = bytes(message).decode(errors="replace")
        self.view.event(kind.replace("_", " "), str(message), style)

    def _thread(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    # -- looking inside ------------------------------------------------------------------

    def _alerts(self, kind: str) -> list[dict[str, Any]]:
        with self.feed.lock:
            return [a for a in self.feed.alerts if a.get("SSHGUARDD_ALERT") == kind]

    def _effective(self, keyword: str) -> str | None:
        """What sshd would use now (`sshd -T` on the file as it is)."""
        out = self.sb.run(["/usr/sbin/sshd", "-T", "-C", "user=nobody,host=x,addr=192.0.2.1"])
        for line in out.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == keyword:
                return value
        return None

    def _root_locked(self) -> bool:
        # Only the password field's first character is looked at; no hash is printed.
        for line in self.sb.path("/etc/shadow").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "root":
                field_ = rest.split(":", 1)[0]
                return field_.startswith(("!", "*"))
        return False

    def _policy_holds(self) -> bool:
        return all(self._effective(k) == "no" for k in PROTECTED) and self._root_locked()

    def _check_policy_holds(self, when: str) -> None:
        v = self.view
        for keyword in PROTECTED:
            value = self._effective(keyword)
            v.check(value == "no", f"{keyword} is no {when} (sshd -T)", f"it is {value}")
        v.check(self._root_locked(), f"root's password is locked {when}")

    def _metrics(self) -> str:
        from sshguardd import config

        port = config.load(self.sb.path("/etc/sshguardd/config.toml")).metrics.port
        with self.sb.connect(None, "127.0.0.1", port, timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").partition("\r\n\r\n")[2]

    def show_daemon_log(self) -> None:
        if self.daemon_log:
            self.view.detail("the daemon's last log lines:\n" + "\n".join(list(self.daemon_log)[-25:]))

    # -- teardown ------------------------------------------------------------------------

    def cleanup(self) -> None:
        self.stop.set()
        self.stop_attacks = True
        try:
            if self.sb is not None:
                if self.daemon is not None and self.daemon.poll() is None:
                    self.sb.signal(self.daemon, signal.SIGTERM)
                    try:
                        self.daemon.wait(15)
                    except subprocess.TimeoutExpired:
                        pass
                self.sb.close()  # kills whatever is left inside, reaps it, removes layers
        finally:
            for t in self.threads:
                t.join(10)
            if self.notify_sock is not None:
                self.notify_sock.close()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def host_unchanged(self) -> bool:
        return all(_digest(p) == d for p, d in self.host_before.items())


def _digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _sum_samples(exposition: str, name: str) -> float:
    """The sum of a metric's samples over all its labels, from Prometheus text format."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _covers(network: Any, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(str(network), strict=False)
    except ValueError:
        return False


def _compact_nft(text: str) -> str:
    """The nft table without blank lines, elements one per line."""
    lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        lines.append(line.replace("\t", "  "))
    return "\n".join(lines)
