"""Prometheus metrics: what the daemon saw and did, for scraping and alerting.

`Metrics(registry)` owns every metric object (client_python style: the registry arrives
through the constructor; by default a private one carrying the process, platform and GC
collectors, so two instances never collide). `serve(address, port)` exposes it over HTTP
(MetricsServer: one thread, bounded connections and deadlines, never a thread per socket).

Metric names (prefix ``sshguardd_``; labels in braces, all with bounded value sets; an
address or network is never a label, a brute-force run would explode the series count):

Log source
  sshguardd_log_lines_read_total                 counter  sshd messages read from the source
  sshguardd_failures_total{kind}                  counter  failed-login events, by Kind value
  sshguardd_logins_accepted_total                 counter  successful logins seen
  sshguardd_bans_withheld_total                   counter  networks admin protection spared
  sshguardd_journal_lag_seconds                   histogram entry time to processing time
  sshguardd_journal_last_read_timestamp_seconds   gauge    when the source last read fine
  sshguardd_journal_read_errors_total             counter  failed reads of the source
  sshguardd_log_messages_suppressed_total{unit}   counter  messages journald dropped from
                                                           sshd's unit (its rate limit)
Bans
  sshguardd_bans_total{family}                    counter  bans applied (family ipv4|ipv6)
  sshguardd_bans_active{family}                   gauge    bans currently in force
  sshguardd_unbans_total{family}                  counter  bans lifted before they expired
  sshguardd_ban_errors_total{operation}           counter  failed firewall calls
                                                           (setup|add|remove|restore)
  sshguardd_offenders_tracked                     gauge    offenders the policy remembers
  sshguardd_offender_evictions_total              counter  offenders dropped at max_tracked
Drift guard
  sshguardd_drift_detected_total{setting,file}    counter  a policy setting found violated
  sshguardd_drift_repaired_total{setting,file}    counter  ... and put back
  sshguardd_repair_failures_total{step}           counter  a repair step failed (e.g.
                                                           edit|validate|replace|restart)
  sshguardd_repairs_refused_total{reason}         counter  repairs not attempted on purpose
  sshguardd_lockout_guard_refusals_total          counter  repairs the lockout guard stopped
  sshguardd_revert_wars_total{setting,file}       counter  someone keeps undoing a repair
  sshguardd_sshd_restarts_total{result}           counter  sshd restarts (success|failure)
Daemon
  sshguardd_build_info{version,python}            gauge    always 1
  sshguardd_reloads_total{result}                 counter  SIGHUP reloads (success|failure)
  process_* / python_*                            the standard process and runtime metrics

Journal lag is a histogram rather than a gauge: a gauge shows only the last entry's lag
between two scrapes, while the histogram keeps every entry and lets rules alert on a
quantile or on the mean (`rate(_sum)/rate(_count)`) over any window. Staleness of the
source as a whole (no entry at all) is what the last-read timestamp is for.
"""

from __future__ import annotations

import ipaddress
import logging
import platform
import socket
from collections.abc import Iterable, Mapping
from typing import TypedDict

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from sshguardd import __version__
from sshguardd.contracts import Kind
from sshguardd.effects.selector_server import Conn, SelectorServer

log = logging.getLogger(__name__)

NAMESPACE = "sshguardd"
FAMILIES = ("ipv4", "ipv6")
FIREWALL_OPERATIONS = ("setup", "add", "remove", "restore")
RESULTS = ("success", "failure")
# Seconds. sshd's lines normally arrive within milliseconds; the top buckets catch a daemon
# catching up on a backlog after a restart (the cursor replays what it missed).
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
               3600)


def family_of(network: str) -> str:
    """'203.0.113.7' or '2001:db8::/64' -> 'ipv4' / 'ipv6' (the only label a ban gets)."""
    return "ipv6" if ipaddress.ip_network(network, strict=False).version == 6 else "ipv4"



class _Common(TypedDict):
    """What every metric of ours is made with (typed, so mypy checks the ** below)."""

    namespace: str
    registry: CollectorRegistry

class Metrics:
    """Every sshguardd metric, as attributes named after the metric without its prefix.

    registry: where to register. None makes a private CollectorRegistry with the process,
    platform and GC collectors (proc is passed to ProcessCollector, for tests). Labelled
    series with a known value set are created at zero up front, so `rate()` and
    `increase()` see the first event instead of a series that springs into being.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, proc: str = "/proc",
                 version: str = __version__):
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(proc=proc, registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        r: _Common = {"namespace": NAMESPACE, "registry": registry}

        self.log_lines_read = Counter(
            "log_lines_read", "sshd messages read from the log source.", **r)
        self.failures = Counter(
            "failures", "Failed-login events seen, by kind.", ["kind"], **r)
        self.logins_accepted = Counter(
            "logins_accepted", "Successful logins seen.", **r)
        self.bans_withheld = Counter(
            "bans_withheld", "Networks whose ban admin protection withheld (counted once "
            "per network and protection).", **r)
        self.journal_lag = Histogram(
            "journal_lag_seconds",
            "Seconds between a log entry's own timestamp and its processing.",
            buckets=LAG_BUCKETS, **r)
        self.journal_last_read = Gauge(
            "journal_last_read_timestamp_seconds",
            "Unix time of the last successful read from the log source.", **r)
        self.journal_read_errors = Counter(
            "journal_read_errors", "Failed reads from the log source.", **r)
        self.log_suppressed = Counter(
            "log_messages_suppressed",
            "Messages journald dropped from sshd's unit under its rate limit, by unit.",
            ["unit"], **r)

        self.bans = Counter("bans", "Bans applied, by address family.", ["family"], **r)
        self.bans_active = Gauge(
            "bans_active", "Bans currently in force, by address family.", ["family"], **r)
        self.unbans = Counter(
            "unbans", "Bans lifted before they expired, by address family.", ["family"],
            **r)
        self.ban_errors = Counter(
            "ban_errors", "Firewall calls that failed, by operation.", ["operation"], **r)
        self.offenders_tracked = Gauge(
            "offenders_tracked", "Offending hosts the ban policy currently remembers.", **r)
        self.offender_evictions = Counter(
            "offender_evictions",
            "Offenders forgotten early because ban.max_tracked was reached.", **r)

        self.drift_detected = Counter(
            "drift_detected", "Policy settings found violated, by setting and file.",
            ["setting", "file"], **r)
        self.drift_repaired = Counter(
            "drift_repaired", "Policy violations repaired, by setting and file.",
            ["setting", "file"], **r)
        self.repair_failures = Counter(
            "repair_failures", "Repair steps that failed, by step.", ["step"], **r)
        self.repairs_refused = Counter(
            "repairs_refused", "Repairs deliberately not attempted, by reason.",
            ["reason"], **r)
        self.lockout_guard_refusals = Counter(
            "lockout_guard_refusals",
            "Repairs the lockout guard refused because they would lock out every admin.",
            **r)
        self.revert_wars = Counter(
            "revert_wars", "Times a repair kept being undone (repairs paused), by setting "
            "and file.", ["setting", "file"], **r)
        self.sshd_restarts = Counter(
            "sshd_restarts", "sshd restarts after a repair, by result.", ["result"], **r)
        self.reloads = Counter(
            "reloads", "Configuration reloads (SIGHUP), by result.", ["result"], **r)
        self.openssh_update_pending = Gauge(
            "openssh_update_pending", "1 when the package manager offers a newer "
            "openssh-server: kind=any, or kind=security from a security origin/advisory.",
            ["kind"], **r)
        self.openssh_info = Gauge(
            "openssh_info", "Always 1: the installed and candidate openssh-server versions.",
            ["installed", "candidate"], **r)
        self.sshd_stale = Gauge(
            "sshd_stale", "1 when a running sshd runs a binary or libraries replaced since "
            "it started.", **r)
        self.update_check_timestamp = Gauge(
            "update_check_timestamp_seconds", "Unix time of the last update check.", **r)
        self.update_check_errors = Counter(
            "update_check_errors", "Update checks that could not ask the package manager.",
            **r)
        self.access_dropped = Counter(
            "access_dropped", "New SSH connections dropped by allow-only mode "
            "([access] sources), by address family.", ["family"], **r)
        self.build = Info("build", "sshguardd version and Python runtime.", **r)
        self.build.info({"version": version, "python": platform.python_version()})

        self._evictions_seen = 0
        for kind in Kind:
            if kind.is_failure:
                self.failures.labels(kind=kind.value)
        for fam in FAMILIES:
            self.bans.labels(family=fam)
            self.bans_active.labels(family=fam)
            self.unbans.labels(family=fam)
        for fam in FAMILIES:
            self.access_dropped.labels(family=fam)
        for update in ("any", "security"):
            self.openssh_update_pending.labels(kind=update)
        for op in FIREWALL_OPERATIONS:
            self.ban_errors.labels(operation=op)
        for result in RESULTS:
            self.sshd_restarts.labels(result=result)
            self.reloads.labels(result=result)

    # Small conveniences so callers need not know label names or families.

    def ban_applied(self, networks: Iterable[str]) -> None:
        for network in networks:
            self.bans.labels(family=family_of(network)).inc()

    def unbanned(self, networks: Iterable[str]) -> None:
        for network in networks:
            self.unbans.labels(family=family_of(network)).inc()

    def set_active_bans(self, networks: Iterable[str]) -> None:
        """Set bans_active from the full list of networks in force."""
        for fam, n in counts_by_family(networks).items():
            self.bans_active.labels(family=fam).set(n)

    def failure(self, kind: Kind | str) -> None:
        value = kind.value if isinstance(kind, Kind) else kind
        if value == Kind.ACCEPTED.value:
            self.logins_accepted.inc()
        else:
            self.failures.labels(kind=value).inc()

    def journal_read(self, entry_times: Iterable[float | None], now: float) -> None:
        """A batch was read at `now` (wall clock): count lines, record lag, stamp the read.
        Entries without a timestamp count as lines but have no lag."""
        n = 0
        for t in entry_times:
            n += 1
            if t is not None:
                # A clock step can make the lag negative; clamp rather than lose the entry.
                self.journal_lag.observe(max(0.0, now - t))
        self.log_lines_read.inc(n)
        self.journal_last_read.set(now)

    def policy_state(self, tracked: int, evictions: int) -> None:
        """Mirror BanPolicy.tracked and BanPolicy.evictions (a running total) here. A total
        below the last one means a new policy object (a reload rebuilt it from zero)."""
        self.offenders_tracked.set(tracked)
        delta = evictions if evictions < self._evictions_seen else \
            evictions - self._evictions_seen
        if delta > 0:
            self.offender_evictions.inc(delta)
        self._evictions_seen = evictions

    def serve(self, address: str = "127.0.0.1", port: int = 9822, *,
              max_connections: int = 32, request_timeout: float = 5.0) -> MetricsServer:
        """Serve /metrics on address:port on a thread of its own (port 0: any free port)."""
        server = MetricsServer(self.registry, address, port,
                               max_connections=max_connections,
                               request_timeout=request_timeout)
        server.start()
        log.info("metrics on http://%s:%d/metrics", server.address, server.port)
        return server


class MetricsServer(SelectorServer):
    """HTTP/1.0 GET of the registry (text or OpenMetrics, as the Accept header asks), one
    request per connection, on the bounded selector loop (selector_server.py).

    max_connections bounds descriptors (32: a Prometheus pair and a few curls need far
    fewer); request_timeout bounds a whole request and, separately, the answer's write."""

    name = "metrics"
    MAX_REQUEST = 8192  # a scrape's request line and headers are ~300 bytes

    def __init__(self, registry: CollectorRegistry, address: str = "127.0.0.1",
                 port: int = 9822, *, max_connections: int = 32,
                 request_timeout: float = 5.0) -> None:
        super().__init__(max_connections=max_connections, request_timeout=request_timeout,
                         max_request=self.MAX_REQUEST)
        self.registry = registry
        self._bind = (address, port)
        self.address, self.port = address, port
        self.scrapes = 0

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self._bind)
            sock.listen(256)  # a burst of connects waits here instead of SYN retries
        except BaseException:
            sock.close()
            raise
        self.address, self.port = sock.getsockname()[:2]
        self._start(sock)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_thread(timeout)

    def _complete(self, buf: bytes, eof: bool) -> bool:
        return b"\r\n\r\n" in buf or b"\n\n" in buf or eof

    def _too_large(self) -> bytes:
        return _http(431, "text/plain", b"request too large\n")

    def _answer(self, conn: Conn, request: bytes) -> bytes:
        head = request.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
        lines = head.decode("latin-1").splitlines()
        parts = lines[0].split() if lines else []
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            return _http(405, "text/plain", b"only GET\n")
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        if parts[1].split("?", 1)[0] == "/favicon.ico":
            return _http(404, "text/plain", b"not found\n")
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        self.scrapes += 1
        return _http(200, content_type, b"" if parts[0] == "HEAD" else body, len(body))


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}


def _http(status: int, content_type: str, body: bytes, length: int | None = None) -> bytes:
    head = (f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("latin-1") + body


def counts_by_family(networks: Iterable[str]) -> Mapping[str, int]:
    counts = dict.fromkeys(FAMILIES, 0)
    for network in networks:
        counts[family_of(network)] += 1
    return counts
