"""Shared by the drift guard's tests: a fake root on real files with a real `sshd -t/-T`,
and the one stand-in for sshd's service manager (a restart script).

sshd itself is always the real /usr/sbin/sshd through sshguardd.effects.sshd.Sshd, which
runs it with a private privilege-separation directory when /run/sshd is missing (as on
this host): the tests exercise that production path instead of a wrapper of their own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from systemd import journal

from sshguardd import config
from sshguardd.daemon import drift_guard as drift
from sshguardd.effects import sshd as service
from sshguardd.effects import writer_hint as writers
from sshguardd.effects.alerts import Alerts
from sshguardd.effects.metrics import Metrics

HASH = "$y$j9T$abcdefghijklmnopqrstu.$ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg"


def restart_script(path: Path, log: Path, then: str = "") -> Path:
    """The stand-in restart command: appends a line to `log` per call, then runs `then`
    (e.g. a SIGHUP to a sandbox's real sshd)."""
    path.write_text(f"#!/bin/sh\nset -e\necho restart >> {log}\n{then}\n")
    path.chmod(0o755)
    return path


def sshd(restart: list[str] | None = None) -> service.Sshd:
    return service.Sshd(restart=restart or ["true"])


class Box:
    """A fake root: etc/ssh with a real host key, etc/shadow, etc/passwd, homes."""

    def __init__(self, root: Path, before_swap: Any = None, **drift_cfg: Any):
        self.root = root
        self.etc = root / "etc"
        self.ssh = self.etc / "ssh"
        (self.ssh / "sshd_config.d").mkdir(parents=True)
        self.key = self.ssh / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        self.main = self.ssh / "sshd_config"
        self.main.write_text(
            f"# test sshd_config\nInclude {self.ssh}/sshd_config.d/*.conf\n"
            f"HostKey {self.key}\nPidFile {root}/sshd.pid\n"
            "KbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\n"
            "PermitRootLogin no\nPasswordAuthentication no\nPermitEmptyPasswords no\n")
        os.chmod(self.main, 0o644)
        self.home = root / "home" / "alice"
        (self.home / ".ssh").mkdir(parents=True)
        self.passwd = self.etc / "passwd"
        self.passwd.write_text(
            f"root:x:0:0:root:{root}/root:/bin/bash\n"
            "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
            f"alice:x:1000:1000:Alice:{self.home}:/bin/bash\n")
        self.shadow = self.etc / "shadow"
        self.shadow.write_text(f"root:*:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n"
                               f"alice:{HASH}:19701:0:99999:7:::\n")
        os.chmod(self.shadow, 0o640)
        self.restarts = root / "restarts.log"
        restart = restart_script(root / "restart-sshd", self.restarts)
        self.sent: list[dict[str, Any]] = []
        self.metrics = Metrics()
        self.now = 1_000_000.0
        dc = {"sshd_config": str(self.main), "shadow": str(self.shadow),
              "restart_command": [str(restart)], **drift_cfg}
        self.cfg = config.Config.model_validate(
            {"daemon": {"state_dir": str(root / "state")}, "drift": dc})
        self.runner = sshd(list(self.cfg.drift.restart_command or [str(restart)]))
        # The journal consulted for a revert war's writer: a real journal file written by
        # systemd-journal-remote (see write_journal), empty until a test adds entries.
        self.journal_dir = root / "journal"
        self.journal_dir.mkdir()
        self.guard = drift.DriftGuard(
            self.cfg, alerts=Alerts(send=lambda m, **f: self.sent.append({"MESSAGE": m, **f})),
            metrics=self.metrics, runner=self.runner, passwd=self.passwd,
            ssh_dir=str(self.ssh), clock=lambda: self.now, before_swap=before_swap,
            writer_hint=lambda since, tools: writers.journal_writer(
                since, lambda: journal.Reader(path=str(self.journal_dir)), tools=tools))

    def write_journal(self, *entries: dict[str, str], at: float) -> None:
        export = self.root / "writers.export"
        with open(export, "w", encoding="utf-8") as f:
            for i, fields in enumerate(entries):
                f.write(f"__REALTIME_TIMESTAMP={int((at + i) * 1_000_000)}\n"
                        f"__MONOTONIC_TIMESTAMP={i + 1}\n_BOOT_ID={'0' * 32}\n")
                f.writelines(f"{k}={v}\n" for k, v in fields.items())
                f.write("\n")
        subprocess.run(["/lib/systemd/systemd-journal-remote",
                        f"--output={self.journal_dir}/w.journal", str(export)],
                       check=True, capture_output=True)

    def give_alice_a_key(self) -> None:
        pub = Path(f"{self.key}.pub").read_text()
        (self.home / ".ssh" / "authorized_keys").write_text(pub)

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        return [a for a in self.sent if a.get("SSHGUARDD_ALERT") == kind]

    def restart_count(self) -> int:
        return len(self.restarts.read_text().splitlines()) if self.restarts.exists() else 0

    def effective(self, context: dict[str, str] | None = None) -> dict[str, str]:
        return self.runner.effective(self.main, context)

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(f"sshguardd_{name}", labels) or 0.0

    def check(self, capsys: Any, *extra: str) -> tuple[int, str]:
        """`sshguardd check` on this box: (exit code, stdout)."""
        from sshguardd import cli

        cfg = self.root / "config.toml"
        # The update watch judges the host's own sshd processes: not this box's business.
        cfg.write_text(f'[daemon]\nstate_dir = "{self.root}/state"\n[drift]\n'
                       f'sshd_config = "{self.main}"\nshadow = "{self.shadow}"\n'
                       '[updates]\nenabled = false\n')
        rc = cli.main(["check", "--config", str(cfg), *extra])
        return rc, capsys.readouterr().out


def actions(outcomes: Any) -> dict[str, str]:
    return {o.item: o.action for o in outcomes if o.action != "ok"}
