"""The metrics exposition as Prometheus scrapes it: names, types, labels, promtool lint."""

from __future__ import annotations

import inspect
import ipaddress
import re
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sshguardd import __version__, config
from sshguardd.contracts import Kind
from sshguardd.effects.metrics import Metrics, MetricsServer, family_of


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    srv = metrics.serve("127.0.0.1", 0)
    yield srv
    srv.stop()


def scrape(server: MetricsServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def exercise(m: Metrics) -> None:
    """Drive every metric through the calls the daemon and drift guard make."""
    m.journal_read([100.0, 100.5, None], now=101.0)
    m.failure(Kind.INVALID_USER)
    m.failure(Kind.BAD_PASSWORD)
    m.failure("bad_password")
    m.failure(Kind.ACCEPTED)
    m.journal_read_errors.inc()
    m.ban_applied(["203.0.113.7/32", "2001:db8:1::/64"])
    m.ban_applied(["198.51.100.9"])
    m.set_active_bans(["203.0.113.7/32", "198.51.100.9/32", "2001:db8:1::/64"])
    m.unbanned(["198.51.100.9/32"])
    m.ban_errors.labels(operation="add").inc()
    m.policy_state(tracked=42, evictions=3)
    m.policy_state(tracked=40, evictions=5)
    m.drift_detected.labels(setting="permitrootlogin", file="/etc/ssh/sshd_config").inc()
    m.drift_repaired.labels(setting="permitrootlogin", file="/etc/ssh/sshd_config").inc()
    m.repair_failures.labels(step="validate").inc()
    m.repairs_refused.labels(reason="audit_mode").inc()
    m.lockout_guard_refusals.inc()
    m.revert_wars.labels(setting="permitrootlogin", file="/etc/ssh/sshd_config").inc()
    m.sshd_restarts.labels(result="success").inc()
    m.reloads.labels(result="success").inc()


def test_promtool_check_metrics_is_clean(metrics: Metrics, server: MetricsServer) -> None:
    exercise(metrics)
    text = scrape(server)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    # promtool prints one line per lint problem (e.g. a counter without _total, a unit
    # not in base units) and exits non-zero.
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_values_after_a_run(metrics: Metrics, server: MetricsServer) -> None:
    exercise(metrics)
    s = samples(scrape(server))

    def v(name: str, **labels: str) -> float:
        return s[(name, frozenset(labels.items()))]

    assert v("sshguardd_log_lines_read_total") == 3
    assert v("sshguardd_failures_total", kind="invalid_user") == 1
    assert v("sshguardd_failures_total", kind="bad_password") == 2
    assert v("sshguardd_failures_total", kind="timeout") == 0  # present before any event
    assert ("sshguardd_failures_total", frozenset({("kind", "accepted")})) not in s
    assert v("sshguardd_logins_accepted_total") == 1
    assert v("sshguardd_journal_lag_seconds_count") == 2  # no lag for an undated entry
    assert v("sshguardd_journal_lag_seconds_sum") == pytest.approx(1.5)
    assert v("sshguardd_journal_lag_seconds_bucket", le="0.5") == 1
    assert v("sshguardd_journal_last_read_timestamp_seconds") == 101.0
    assert v("sshguardd_bans_total", family="ipv4") == 2
    assert v("sshguardd_bans_total", family="ipv6") == 1
    assert v("sshguardd_bans_active", family="ipv4") == 2
    assert v("sshguardd_bans_active", family="ipv6") == 1
    assert v("sshguardd_unbans_total", family="ipv4") == 1
    assert v("sshguardd_ban_errors_total", operation="add") == 1
    assert v("sshguardd_offenders_tracked") == 40
    assert v("sshguardd_offender_evictions_total") == 5  # a running total, not summed twice
    assert v("sshguardd_drift_detected_total", setting="permitrootlogin",
             file="/etc/ssh/sshd_config") == 1
    assert v("sshguardd_repair_failures_total", step="validate") == 1
    assert v("sshguardd_lockout_guard_refusals_total") == 1
    assert v("sshguardd_sshd_restarts_total", result="success") == 1
    assert v("sshguardd_sshd_restarts_total", result="failure") == 0
    assert v("sshguardd_build_info", version=__version__,
             python=__import__("platform").python_version()) == 1
    # Process metrics come with the default registry.
    assert v("process_resident_memory_bytes") > 0
    assert v("process_open_fds") > 0


def test_no_address_is_ever_a_label(metrics: Metrics, server: MetricsServer) -> None:
    exercise(metrics)
    for i in range(50):
        metrics.ban_applied([f"192.0.2.{i}/32"])
    text = scrape(server)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            for key, value in s.labels.items():
                if key in ("le", "version", "python", "implementation", "major", "minor",
                           "patchlevel"):
                    continue
                with pytest.raises(ValueError):
                    ipaddress.ip_network(value, strict=False)
    # Cardinality: 50 more bans added no series.
    assert len(re.findall(r"^sshguardd_bans_total", text, re.M)) == 2


def test_counters_are_counters(metrics: Metrics, server: MetricsServer) -> None:
    types = {f.name: f.type for f in text_string_to_metric_families(scrape(server))}
    for name in ("sshguardd_failures", "sshguardd_bans", "sshguardd_unbans",
                 "sshguardd_log_lines_read", "sshguardd_drift_detected",
                 "sshguardd_drift_repaired", "sshguardd_repair_failures",
                 "sshguardd_sshd_restarts", "sshguardd_offender_evictions",
                 "sshguardd_lockout_guard_refusals", "sshguardd_ban_errors"):
        assert types[name] == "counter", name
    assert types["sshguardd_bans_active"] == "gauge"
    assert types["sshguardd_journal_lag_seconds"] == "histogram"


def test_evictions_survive_a_rebuilt_policy(metrics: Metrics) -> None:
    metrics.policy_state(tracked=10, evictions=7)
    metrics.policy_state(tracked=10, evictions=7)  # same total: nothing new
    metrics.policy_state(tracked=3, evictions=2)   # reload: a new policy counted 2 so far
    metrics.policy_state(tracked=3, evictions=4)
    assert metrics.registry.get_sample_value("sshguardd_offender_evictions_total") == 11


def test_clock_step_does_not_make_negative_lag(metrics: Metrics) -> None:
    metrics.journal_read([200.0], now=100.0)
    reg = metrics.registry
    assert reg.get_sample_value("sshguardd_journal_lag_seconds_sum") == 0.0
    assert reg.get_sample_value("sshguardd_journal_lag_seconds_count") == 1.0


def test_custom_registry_has_only_ours() -> None:
    reg = CollectorRegistry()
    Metrics(reg)
    names = {f.name for f in reg.collect()}
    assert names and all(n.startswith("sshguardd_") for n in names)
    # Two instances on private registries never collide (one per test, one per reload).
    Metrics()
    Metrics()


def test_serve_defaults_match_config() -> None:
    cfg = config.MetricsConfig()
    params = inspect.signature(Metrics.serve).parameters
    assert (params["address"].default, params["port"].default) == (cfg.address, cfg.port)
    assert ipaddress.ip_address(cfg.address).is_loopback  # never exposed by default


def test_ipv6_listener() -> None:
    m = Metrics()
    srv = m.serve("::1", 0)
    try:
        with urllib.request.urlopen(f"http://[::1]:{srv.port}/metrics", timeout=5) as r:
            assert b"sshguardd_build_info" in r.read()
    finally:
        srv.stop()


@pytest.mark.parametrize("net,fam", [("10.0.0.1", "ipv4"), ("10.0.0.0/8", "ipv4"),
                                     ("::1", "ipv6"), ("2001:db8::/64", "ipv6")])
def test_family_of(net: str, fam: str) -> None:
    assert family_of(net) == fam


# A local user's idle sockets (issue 10): 1,100 connections that never send a byte.
IDLER = r"""
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(n):
    s = socket.socket()
    s.connect((host, port))
    held.append(s)
print(len(held), flush=True)
sys.stdin.read()
"""


def idle_connections(port: int, n: int = 1100) -> subprocess.Popen[str]:
    """Another process holding n idle connections to 127.0.0.1:port (once it printed n)."""
    import sys

    p = subprocess.Popen([sys.executable, "-I", "-c", IDLER, "127.0.0.1", str(port), str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == str(n)
    return p


def own_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


def test_1100_idle_connections_cost_no_threads_and_bounded_descriptors(
        metrics: Metrics, server: MetricsServer) -> None:
    # The old prometheus_client server ran a thread per connection with no timeout: 1,100
    # idle sockets took 1,100 threads and every one of the daemon's 1,024 descriptors.
    import threading

    from sshguardd.demo.sandbox import wait_for

    fds, threads = own_fds(), threading.active_count()
    idler = idle_connections(server.port)
    try:
        assert server.connections <= server.max_connections
        # + the two pipes to the idler, the server thread's epoll descriptor (it may not
        # exist yet at the first count) and listdir's own descriptor
        assert own_fds() <= fds + server.max_connections + 4
        assert threading.active_count() == threads
        wait_for(lambda: server.evicted >= 1100 - server.max_connections, 10,
                 what="the backlog to be accepted")
        assert "sshguardd_bans_total" in scrape(server)  # a scrape still gets through
        assert server.problem is None
    finally:
        assert idler.stdin is not None and idler.stdout is not None
        idler.stdin.close()
        idler.wait(10)
        idler.stdout.close()


def test_a_silent_connection_is_closed_at_its_deadline(metrics: Metrics) -> None:
    import socket

    from sshguardd.demo.sandbox import wait_for

    srv = metrics.serve("127.0.0.1", 0, request_timeout=0.3)
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line
            s.settimeout(5)
            assert s.recv(100) == b""  # closed by the server
        wait_for(lambda: srv.connections == 0, 5, what="the connection to be gone")
        assert srv.timed_out == 1
    finally:
        srv.stop()
