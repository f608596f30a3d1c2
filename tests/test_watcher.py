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


# -- the drift guard's snapshot: symlink targets and swapped directories (issue 11) -------

def _guarded(tmp_path: Path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from drift_helpers import Box

    box = Box(tmp_path / "box")
    box.give_alice_a_key()
    return box


def _wait_path(got: queue.Queue, path: Path, timeout: float = 5) -> None:
    seen: list[str] = []

    def arrived() -> bool:
        try:
            seen.append(got.get(timeout=0.05).path)
        except queue.Empty:
            pass
        return str(path) in seen

    wait_for(arrived, timeout, what=f"a change of {path}")


def test_a_symlinked_dropins_target_directory_is_watched(tmp_path: Path):
    # sshd_config.d/50-managed.conf -> /srv/cfg/50-managed.conf: `sed -i` in /srv/cfg
    # renames there, which a watch on sshd_config.d never sees (before: only the 5-min
    # re-check found it).
    box = _guarded(tmp_path)
    srv = tmp_path / "srv"
    srv.mkdir()
    target = srv / "50-managed.conf"
    target.write_text("X11Forwarding yes\n")
    (box.ssh / "sshd_config.d" / "50-managed.conf").symlink_to(target)
    box.guard.check_all("start")
    watch = box.guard.watch_set()
    assert str(srv) in watch.dirs and watch.relevant(str(target))
    got: queue.Queue[FileChanged] = queue.Queue()
    with Watcher(watch, got.put, debounce=0.05):
        subprocess.run(["sed", "-i", "1i PermitRootLogin yes", str(target)], check=True)
        _wait_path(got, target)
    from drift_helpers import actions

    assert actions(box.guard.handle(FileChanged(str(target), box.now))) == {
        "permitrootlogin": "repaired"}
    # repaired at the target, under the comment a repair writes above its line
    lines = target.read_text().splitlines()
    assert lines[0].startswith("# sshguardd ") and lines[1] == "PermitRootLogin no", lines


def test_a_swapped_dropin_directory_is_watched_again_at_once(tmp_path: Path):
    box = _guarded(tmp_path)
    d = box.ssh / "sshd_config.d"
    got: queue.Queue[FileChanged] = queue.Queue()
    with Watcher(box.guard.watch_set(), got.put, debounce=0.05) as w:
        # An installer swaps the whole directory: rename a new one over the old name.
        new = box.ssh / "sshd_config.d.new"
        new.mkdir()
        os.rename(d, box.ssh / "sshd_config.d.old")
        os.rename(new, d)
        _wait_path(got, d)  # the swap itself is reported
        # The watch follows the path, not the old inode: a file created in the new
        # directory is seen.
        dropin = d / "60-new.conf"
        wait_for(lambda: str(d) in w._watches, 5, what="the re-watch")
        dropin.write_text("PasswordAuthentication yes\n")
        _wait_path(got, dropin)
