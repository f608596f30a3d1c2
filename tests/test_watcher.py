"""The inotify watcher on real directories: renames, bursts, filtering, clean stop."""

from __future__ import annotations

import os
import queue
import subprocess
from pathlib import Path

from sshguardd.contracts import FileChanged
from sshguardd.demo.sandbox import wait_for
from sshguardd.effects.watcher import Watcher


def collect(got: queue.Queue, seconds: float) -> list[str]:
    """Everything delivered until nothing more arrives for `seconds`."""
    out = []
    while True:
        try:
            out.append(got.get(timeout=seconds).path)
        except queue.Empty:
            return out


def test_sed_i_rename_is_seen_once_after_the_burst(tmp_path: Path):
    target = tmp_path / "sshd_config"
    target.write_text("PermitRootLogin no\n")
    got: queue.Queue[FileChanged] = queue.Queue()
    with Watcher([tmp_path], got.put, debounce=0.1,
                 relevant=lambda p: p == str(target)):
        # sed -i writes a temp file in the same dir and renames it over the target.
        subprocess.run(["sed", "-i", "s/no/yes/", str(target)], check=True)
        first = got.get(timeout=5)
        assert first.path == str(target) and first.time > 0
        assert collect(got, 0.5) == []  # the burst was delivered once


def test_cp_and_mv_over_the_file_and_new_files(tmp_path: Path):
    shadow = tmp_path / "shadow"
    shadow.write_text("root:*:1::::::\n")
    got: queue.Queue[FileChanged] = queue.Queue()
    with Watcher([tmp_path], got.put, debounce=0.05):
        tmp = tmp_path / "shadow.new"
        tmp.write_text("root:x:1::::::\n")
        os.rename(tmp, shadow)
        wait_for(lambda: str(shadow) in [got.get(timeout=5).path], timeout=5,
                 what="the rename to be reported")
        (tmp_path / "50-cloud-init.conf").write_text("x\n")
        seen = set(collect(got, 0.5))
        assert str(tmp_path / "50-cloud-init.conf") in seen


def test_irrelevant_files_are_filtered(tmp_path: Path):
    got: queue.Queue[FileChanged] = queue.Queue()
    with Watcher([tmp_path], got.put, debounce=0.05,
                 relevant=lambda p: p.endswith(".conf")):
        (tmp_path / "hosts").write_text("x\n")
        (tmp_path / "a.conf").write_text("x\n")
        assert got.get(timeout=5).path == str(tmp_path / "a.conf")
        assert collect(got, 0.3) == []


def test_a_failing_callback_does_not_kill_the_watcher(tmp_path: Path):
    got: queue.Queue[FileChanged] = queue.Queue()

    def callback(ev: FileChanged) -> None:
        got.put(ev)
        if ev.path.endswith("boom"):
            raise RuntimeError("consumer failed")

    with Watcher([tmp_path], callback, debounce=0.02):
        (tmp_path / "boom").write_text("x")
        assert got.get(timeout=5).path.endswith("boom")
        (tmp_path / "after").write_text("x")
        assert wait_for(lambda: got.get(timeout=5).path.endswith("after"), timeout=5,
                        what="delivery after a failed callback")


def test_update_adds_and_drops_directories(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    got: queue.Queue[FileChanged] = queue.Queue()
    with Watcher([a], got.put, debounce=0.02) as w:
        (b / "x.conf").write_text("x")
        w.update([b])
        (a / "y.conf").write_text("y")
        (b / "z.conf").write_text("z")
        assert got.get(timeout=5).path == str(b / "z.conf")
        assert collect(got, 0.3) == []
