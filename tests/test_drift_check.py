"""`sshguardd check`: the audit table and exit codes, against a real sshd.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drift_helpers import Box


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_check_command_table_and_exit_codes(box: Box, capsys):
    rc, out = box.check(capsys)
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["ITEM", "VALUE", "SOURCE", "RESULT"]
    assert any(ln.split()[:4] == ["permitrootlogin", "no", f"{box.main}:8", "pass"]
               for ln in lines)
    dropin = box.ssh / "sshd_config.d" / "50-cloud-init.conf"
    dropin.write_text("PasswordAuthentication yes\n")
    before = {p: p.read_bytes() for p in (box.main, dropin, box.shadow)}
    rc, out = box.check(capsys, "--json")
    assert rc == 1
    doc = json.loads(out)
    assert doc["compliant"] is False
    bad = [i for i in doc["items"] if not i["ok"]]
    assert bad == [{"item": "passwordauthentication", "expected": "no", "value": "yes",
                    "source": f"{dropin}:1", "ok": False, "note": ""}]
    assert {p: p.read_bytes() for p in before} == before  # check changes nothing


def test_check_reports_config_sshd_rejects(box: Box, capsys):
    box.main.write_text(box.main.read_text() + "Bogus yes\n")
    rc, out = box.check(capsys)
    assert rc == 1
    assert any(ln.startswith("sshd accepts its config") and "FAIL" in ln
               for ln in out.splitlines())


def test_check_lists_match_blocks_with_sshd_probe(box: Box, capsys):
    box.main.write_text(box.main.read_text() + "Match User bob\n  PasswordAuthentication yes\n"
                        "Match User bob\n  PasswordAuthentication no\n")
    rc, out = box.check(capsys, "--json")
    items = [i for i in json.loads(out)["items"]
             if i["item"] == "passwordauthentication (Match User bob)"]
    assert rc == 1
    assert [(i["value"], i["ok"], i["source"]) for i in items] == [
        ("yes", False, f"{box.main}:12"), ("no", True, f"{box.main}:14")]
    # sshd agrees for the first block; for the second, the first block wins for bob.
    assert items[0]["note"] == ""
    assert items[1]["note"].startswith("sshd -T -C user=bob,") and \
        items[1]["note"].endswith(" says yes")
