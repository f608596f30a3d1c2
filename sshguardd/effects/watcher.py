"""Watches directories with inotify (watchdog) and reports changed files, debounced.

Directories, not files: editors, `sed -i`, vipw, passwd and cloud-init replace a file by
writing a temporary one and renaming it over the old name, which a watch on the old inode
would never see. Every create, write-close, rename (both names) and delete in a watched
directory counts; a burst (sed -i: create, modify, close, move) is delivered once, after
`debounce` seconds of quiet, as one FileChanged per path.

What to watch arrives as an immutable contracts.WatchSet (directories, exact paths, Include
patterns) that the watcher filters with on its own threads; it never calls into the drift
guard. A watched directory that is renamed over or removed (a swapped drop-in directory)
is reported like a file and its watch is dropped and made again on the path at once: an
inotify watch follows the old inode, which no longer has that name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from sshguardd.contracts import FileChanged, WatchSet

log = logging.getLogger(__name__)

# Only events that can change a file's content or name. Leaving out IN_OPEN and
# IN_CLOSE_NOWRITE matters in /etc, which every process start reads (ld.so.cache,
# locale.alias, ...): the kernel then does not even queue those.
# Directory creates, moves and deletes count too: a watched directory swapped by a rename.
EVENTS = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent,
          FileDeletedEvent, DirCreatedEvent, DirMovedEvent, DirDeletedEvent]


class _Handler(FileSystemEventHandler):
    def __init__(self, owner: Watcher):
        self.owner = owner

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [os.fsdecode(event.src_path)]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(os.fsdecode(dest))
        for path in paths:
            if event.is_directory:
                self.owner._dir_event(path)
            else:
                self.owner._note(path)


class Watcher:
    """`Watcher(watch, callback, debounce=0.1)`; `start()`, `stop()`, `update(watch)`.

    watch is a contracts.WatchSet (or, for tools, plain directories with an optional
    relevant(path) filter). Directories are watched non-recursively. callback receives
    contracts.FileChanged on the watcher's own delivery thread (the daemon puts it on its
    queue). The filter runs before debouncing, so /etc's unrelated churn costs nothing
    downstream. clock stamps FileChanged.time.
    """

    def __init__(self, watch: WatchSet | Iterable[Path | str],
                 callback: Callable[[FileChanged], None], *, debounce: float = 0.1,
                 relevant: Callable[[str], bool] | None = None,
                 clock: Callable[[], float] = time.time):
        self.callback = callback
        self.debounce = debounce
        self._set_watch(watch, relevant)
        self.clock = clock
        self._pending: dict[str, float] = {}   # path -> monotonic time of last event
        self._first = 0.0                       # first event of the pending burst
        self._cond = threading.Condition()
        self._stopping = False
        self._observer: BaseObserver | None = None
        self._watches: dict[str, ObservedWatch] = {}
        self._handler = _Handler(self)
        self._thread: threading.Thread | None = None
        self._rewatch: set[str] = set()
        # _watches is changed by update() (loop thread) and a re-watch (delivery thread).
        self._sched = threading.Lock()

    def _set_watch(self, watch: WatchSet | Iterable[Path | str],
                   relevant: Callable[[str], bool] | None = None) -> None:
        if isinstance(watch, WatchSet):
            self.watch: WatchSet | None = watch
            dirs: Iterable[str] = watch.dirs
            relevant = watch.relevant
        else:
            self.watch = None
            dirs = (os.fspath(p) for p in watch)
        self.paths = [Path(p) for p in dict.fromkeys(dirs)]
        self.relevant = relevant

    def start(self) -> None:
        observer = Observer()
        for p in self.paths:
            self._watches[os.fspath(p)] = observer.schedule(
                self._handler, os.fspath(p), recursive=False, event_filter=EVENTS)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._deliver, name="drift-watcher",
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """The delivery thread runs (False before start() and after it died)."""
        return self._thread is not None and self._thread.is_alive()

    def update(self, watch: WatchSet | Iterable[Path | str]) -> None:
        """Watch exactly `watch` from now on (e.g. after an Include of a new directory was
        added): new directories are added, dropped ones unwatched, the rest untouched.
        Called on the loop's thread; the snapshot is swapped in one assignment."""
        with self._cond:
            self._set_watch(watch, None if isinstance(watch, WatchSet) else self.relevant)
        want = [os.fspath(p) for p in self.paths]
        observer = self._observer
        if observer is None:
            return
        with self._sched:
            for p in list(self._watches):
                if p not in want:
                    observer.unschedule(self._watches.pop(p))
            for p in want:
                if p not in self._watches and os.path.isdir(p):
                    self._watches[p] = observer.schedule(
                        self._handler, p, recursive=False, event_filter=EVENTS)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(10)
            self._observer = None
            self._watches.clear()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _dir_event(self, path: str) -> None:
        """A directory was created, renamed or removed: if it is one we watch, its watch
        is stale (or missing) and its contents may all be different."""
        if path not in {os.fspath(p) for p in self.paths}:
            return
        with self._cond:
            self._rewatch.add(path)
        self._note(path)

    def _rewatch_dirs(self) -> None:
        with self._cond:
            todo, self._rewatch = self._rewatch, set()
        observer = self._observer
        if observer is None:
            return
        with self._sched:
            for p in todo:
                self._watch_again(observer, p)

    def _watch_again(self, observer: BaseObserver, p: str) -> None:
        old = self._watches.pop(p, None)
        if old is not None:
            try:
                observer.unschedule(old)
            except (KeyError, OSError):
                pass
        if os.path.isdir(p):
            try:
                self._watches[p] = observer.schedule(
                    self._handler, p, recursive=False, event_filter=EVENTS)
                log.info("watching %s again: it was swapped", p)
            except OSError as exc:
                log.warning("cannot watch %s again: %s", p, exc)

    def _note(self, path: str) -> None:
        if self.relevant is not None and not self.relevant(path):
            return
        log.debug("change noted: %s", path)
        with self._cond:
            now = time.monotonic()
            if not self._pending:
                self._first = now
            self._pending[path] = now
            self._cond.notify_all()

    def _deliver(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._pending:
                        # Quiet for `debounce`, but never held back longer than
                        # 10x that by a writer that keeps touching the file.
                        quiet_at = min(max(self._pending.values()) + self.debounce,
                                       self._first + 10 * self.debounce)
                        wait = quiet_at - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopping:
                    return
                batch = list(self._pending)
                self._pending.clear()
            self._rewatch_dirs()
            now = self.clock()
            log.debug("delivering %d changed paths", len(batch))
            for path in batch:
                try:
                    self.callback(FileChanged(path, now))
                except Exception:  # the watcher must outlive a failing consumer
                    log.exception("drift watcher callback failed for %s", path)
