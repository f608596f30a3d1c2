"""The config file on disk: the one place sshguardd opens /etc/sshguardd/config.toml.

config.py stays pure (it parses text); this reads the file the way THREATS.md asks for
files a root daemon opens: never waiting on a FIFO or a device (O_NONBLOCK, regular files
only, as fstat says) and never reading without bound (1 MiB, far above any real config).
A symlinked config is followed: configuration management often installs it as a link.
"""

from __future__ import annotations

from pathlib import Path

from sshguardd import config
from sshguardd.effects import files

MAX_BYTES = 1024 * 1024


def load(path: Path | str | None = None) -> config.Config:
    """Read and validate the config file. A missing default file means all defaults; a
    missing file named explicitly is an error. Raises config.ConfigError."""
    p = config.DEFAULT_PATH if path is None else Path(path)
    try:
        data = files.read_untrusted(p, max_bytes=MAX_BYTES, follow_symlinks=True)
    except FileNotFoundError:
        if path is not None:
            raise config.ConfigError(p, [("(file)", "no such file")]) from None
        return config.Config()  # its profile is the shipped baseline
    except OSError as exc:
        raise config.ConfigError(p, [("(file)", str(exc))]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise config.ConfigError(p, [("(file)", f"not UTF-8: {exc}")]) from None
    cfg = config.parse(text, p)
    check_profile(cfg)
    return cfg


def check_profile(cfg: config.Config) -> None:
    """[drift] profile must load and validate, and profile_enforce name controls it can
    enforce: a broken profile is a bad configuration (exit 78), found at start-up and by
    `sshguardd check-config`, not at the first drift check."""
    from sshguardd.effects import profile_files  # it reads config's own error type

    prof = profile_files.load(cfg.drift.profile)
    problems = prof.check_opt_in(cfg.drift.profile_enforce)
    if problems:
        raise config.ConfigError(cfg.drift.profile, problems)
