"""packaging/prometheus: the alert rules pass `promtool check` and their `promtool test rules`
unit tests, and the rules and the Grafana dashboard only use metrics sshguardd exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from sshguardd.effects.fleet_metrics import FleetMetrics
from sshguardd.effects.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "packaging" / "prometheus"
RULES = PROM / "sshguardd.rules.yml"
RULE_TESTS = PROM / "tests" / "sshguardd.rules.test.yml"
DASHBOARD = PROM / "sshguardd.grafana.json"
METRIC = re.compile(r"\b((?:sshguardd|process)_[a-z_]+)\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",), "info": ("_info",), "summary": ("", "_sum", "_count")}


def exported_names() -> set[str]:
    """Every sample name the exposition can contain, including labelled metrics that have
    no series until their first event."""
    names = set()
    metrics = Metrics()
    FleetMetrics(metrics.registry)  # registered beside them in fleet mode
    for fam in metrics.registry.collect():
        names.update(fam.name + suffix for suffix in SUFFIXES[fam.type])
    # Cross-check with a real exposition: the families above are what gets served.
    text = generate_latest(Metrics().registry).decode()
    served = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
              if line and not line.startswith("#")}
    assert served - {n for n in served if n.endswith("_created")} <= names
    return names


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_rules_are_valid() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_rule_unit_tests_pass() -> None:
    r = promtool("test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_rule_unit_tests_catch_a_wrong_rule(tmp_path: Path) -> None:
    # A rule that waits 20 minutes instead of 5 before paging "down" must fail its test.
    (tmp_path / "tests").mkdir()
    shutil.copy(RULE_TESTS, tmp_path / "tests")
    (tmp_path / RULES.name).write_text(RULES.read_text().replace(
        "expr: up{job=\"sshguardd\"} == 0\n        for: 5m",
        "expr: up{job=\"sshguardd\"} == 0\n        for: 20m", 1))
    assert (tmp_path / RULES.name).read_text() != RULES.read_text()
    r = promtool("test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
    assert r.returncode != 0 and "SshguarddDown" in r.stdout + r.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s+- alert: (\w+)", RULES.read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert alerts and alerts == tested


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_only_exported_metrics_are_used(source: str) -> None:
    text = RULES.read_text() if source == "rules" else "\n".join(dashboard_exprs())
    used = set(METRIC.findall(text))
    assert used
    missing = used - exported_names()
    assert not missing, missing


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no "check this expression" command: wrap each query in a recording rule.
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$instance", ".+")
        lines += [f"      - record: dashboard:q{i}", f"        expr: {json.dumps(e)}"]
    f = tmp_path / "dashboard.rules.yml"
    f.write_text("\n".join(lines) + "\n")
    r = promtool("check", "rules", str(f))
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_shape() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "sshguardd"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    for p in dash["panels"]:
        for t in p["targets"]:
            assert 'job="sshguardd"' in t["expr"], t["expr"]
