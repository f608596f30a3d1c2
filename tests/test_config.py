"""The config file: defaults, the example, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from sshguardd import config
from sshguardd.effects import config_file

ROOT = Path(__file__).resolve().parents[1]


def test_example_loads_and_equals_defaults():
    # The example documents every key with its default: loading it must give the defaults.
    cfg = config_file.load(ROOT / "config.example.toml")
    assert cfg == config.Config()


def test_example_lists_every_key():
    text = (ROOT / "config.example.toml").read_text()

    def keys(model, prefix=""):
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, config.BaseModel):
                yield from keys(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    missing = [k for k in keys(config.Config()) if f"{k.rsplit('.', 1)[-1]} =" not in text
               and f"# {k.rsplit('.', 1)[-1]} =" not in text]
    assert missing == []


def test_missing_default_file_means_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    assert config_file.load() == config.Config()


@pytest.mark.parametrize("text,key,reason", [
    ("[ban]\nmax_retri = 5\n", "ban.max_retri", "unknown key"),
    ("[ban]\nmax_retry = 0\n", "ban.max_retry", "greater than or equal to 1"),
    ("[ban]\nfind_time = 'soon'\n", "ban.find_time", "invalid duration"),
    ("[ban]\nallow = ['10.0.0.300']\n", "ban.allow.0", "not an IP address"),
    ("[ban]\nban_time = '2h'\nmax_ban_time = '1h'\n", "ban.ban_time", "ban.max_ban_time (1h)"),
    ("[drift]\nmode = 'fix'\n", "drift.mode", "'enforce' or 'audit'"),
    ("[metrics]\nport = 70000\n", "metrics.port", "less than or equal to 65535"),
    ("[firewall]\ntable = 'x; flush ruleset'\n", "firewall.table", "pattern"),
    ("[ban\n", "(syntax)", "line 1"),
])
def test_errors_name_key_and_reason(text, key, reason):
    with pytest.raises(config.ConfigError) as err:
        config.parse(text, "t.toml")
    assert any(k == key and reason in r for k, r in err.value.problems), err.value.problems


def test_allow_list_normalised():
    cfg = config.parse("[ban]\nallow = ['192.0.2.7', '2001:db8::1/64']\n")
    assert cfg.ban.allow == ("192.0.2.7/32", "2001:db8::/64")


def test_frozen():
    cfg = config.Config()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.ban.max_retry = 3  # type: ignore[misc]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sshguardd", *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_check_config_ok():
    r = _cli("check-config", "--config", str(ROOT / "config.example.toml"))
    assert (r.returncode, r.stdout.strip()) == (
        0, f"{ROOT / 'config.example.toml'}: ok (drift guard: enforce, bans: on)")


def test_check_config_reports_each_problem_exit_78(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ban]\nmax_retry = -1\nbogus = 1\n[metrics]\nport = 0\n")
    r = _cli("check-config", "--config", str(bad))
    assert r.returncode == 78
    assert f"{bad}: ban.max_retry:" in r.stdout
    assert f"{bad}: ban.bogus: unknown key" in r.stdout
    assert f"{bad}: metrics.port:" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_check_config_json_and_missing_file(tmp_path):
    r = _cli("check-config", "--json", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 78
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["problems"][0]["reason"] == "no such file"


def test_help_lists_verbs():
    r = _cli("--help")
    assert r.returncode == 0
    for verb in ("check-config",):
        assert verb in r.stdout


def test_config_file_is_read_like_a_root_daemon_reads_files(tmp_path):
    # A FIFO (or a device) at the config path must not hang the start: read_text() would
    # wait for a writer forever. Regular files only, and at most 1 MiB.
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(config.ConfigError) as err:
        config_file.load(fifo)
    assert err.value.problems[0][0] == "(file)" and "fifo" in err.value.problems[0][1].lower()
    big = tmp_path / "big.toml"
    big.write_text("# x\n" * 300_000)
    with pytest.raises(config.ConfigError, match="larger than"):
        config_file.load(big)
    link = tmp_path / "link.toml"
    link.symlink_to(ROOT / "config.example.toml")  # configuration management's habit
    assert config_file.load(link) == config.Config()
    with pytest.raises(config.ConfigError, match="no such file"):
        config_file.load(tmp_path / "absent.toml")
    (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\n")
    with pytest.raises(config.ConfigError, match="not UTF-8"):
        config_file.load(tmp_path / "latin1.toml")


def test_check_config_on_a_fifo_exits_78_at_once(tmp_path):
    # Before, check-config (and `run`'s ExecStartPre=) waited forever on a FIFO.
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "sshguardd", "check-config", "--config",
                        str(fifo)], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 78, r.stdout + r.stderr
    assert f"{fifo}: (file): refusing {fifo}: is a FIFO" in r.stdout
