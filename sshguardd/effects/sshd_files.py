"""Reading the files sshd reads, for the pure model in sshguardd.drift.sshd_model.

Each file is opened like a setuid program opens a file it does not trust (O_NONBLOCK, so a
FIFO cannot stall the loop; fstat after open; regular files only; a size cap). Symlinks
are followed, as sshd follows them (configuration management links sshd_config to a
managed copy), and where they lead is reported so the watcher can watch it.

A glob matches every kind of entry, as sshd's glob(3) does: a FIFO or a directory an
Include matches is not skipped but reported (NotRegular) before sshd is ever run on it,
since sshd itself would block on the FIFO.
"""

from __future__ import annotations

import glob as _glob
import os
import stat
from dataclasses import dataclass, field

from sshguardd.contracts import WatchSet
from sshguardd.drift import sshd_model

MAX_BYTES = 4 << 20  # no real sshd_config is near this; /dev/zero would be


class NotRegular(OSError):
    """A file sshd would read is not a regular file (FIFO, socket, device, directory)."""


def read_text(path: str, max_bytes: int = MAX_BYTES) -> str | None:
    """The file's text (undecodable bytes kept as surrogates), None if it does not exist.
    Raises NotRegular for anything but a regular file and OSError past max_bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(f"{path} is not a regular file "
                             f"({stat.filemode(st.st_mode)[0]}); sshd would not read it "
                             "as configuration")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise OSError(f"{path} is larger than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="surrogateescape")
    finally:
        os.close(fd)


def expand(pattern: str) -> list[str]:
    """What sshd's glob(3) returns for an Include pattern, in its (byte) order."""
    if sshd_model.has_magic(pattern):
        return sorted(_glob.glob(pattern))  # C-locale glob sorts by bytes, as str does
    return [pattern] if os.path.lexists(pattern) else []


@dataclass(frozen=True)
class Loaded:
    model: sshd_model.SshdConfig
    texts: dict[str, str]                              # every file, exactly as modelled
    targets: dict[str, str] = field(default_factory=dict)  # symlinked path -> real path

    def watch_set(self, extra: tuple[str, ...] = ()) -> WatchSet:
        """The directories and names a change in which can change the verdict: each file
        read and where its symlinks lead, every Include pattern (also as seen through a
        symlinked directory), plus `extra` paths (the shadow files). Each directory's
        parent is watched too, so a swapped (renamed over) directory is seen at once."""
        files = set(self.model.files) | {self.model.main} | set(extra)
        files |= set(self.targets.values())
        dirs = list(self.model.included_dirs)
        for path in (*self.targets.values(), *extra):
            d = path if path in self.dir_targets.values() else os.path.dirname(path)
            if d not in dirs:
                dirs.append(d)
        for d in list(dirs):
            parent = os.path.dirname(d)
            if parent and parent not in dirs:
                dirs.append(parent)
        patterns = [p for inc in self.model.includes for p in inc.patterns]
        for p in list(patterns):
            real = self.dir_targets.get(os.path.dirname(p))
            if real:
                patterns.append(f"{real}/{os.path.basename(p)}")
        return WatchSet(tuple(d for d in dirs if os.path.isdir(d)), frozenset(files),
                        tuple(dict.fromkeys(patterns)))

    @property
    def dir_targets(self) -> dict[str, str]:
        return {k: v for k, v in self.targets.items() if k in self.model.included_dirs}


def load(main: str | os.PathLike[str], ssh_dir: str = sshd_model.SSH_DIR) -> Loaded:
    """Model the configuration rooted at `main` from the real filesystem.

    Raises NotRegular/OSError for a file that cannot be read as sshd would read it and
    ConfigSyntaxError for one sshd would reject."""
    texts: dict[str, str] = {}
    targets: dict[str, str] = {}

    def read(path: str) -> str | None:
        text = read_text(path)
        if text is not None:
            texts[path] = text
            real = os.path.realpath(path)
            if real != path:
                targets[path] = real
        return text

    model = sshd_model.parse(os.fspath(main), read, expand, ssh_dir)
    # Directories an Include reads through a symlink are watched where they lead too.
    for d in model.included_dirs:
        real = os.path.realpath(d)
        if real != d:
            targets[d] = real
    return Loaded(model, texts, targets)
