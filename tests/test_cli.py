"""Only the CLI decides exit codes: what escapes a verb becomes one (sysexits.h)."""

from __future__ import annotations

import argparse
import logging

import pytest

from sshguardd import cli, config


def _raise(exc: BaseException):  # type: ignore[no-untyped-def]
    def verb(args: argparse.Namespace) -> int:
        raise exc
    return verb


def test_a_bug_exits_70_with_its_traceback_not_1(caplog: pytest.LogCaptureFixture) -> None:
    # Exit 1 means "a finding" (drift found by `check`): a crash must not read as one.
    with caplog.at_level(logging.ERROR):
        code = cli.run_verb(_raise(ZeroDivisionError("boom")), argparse.Namespace())
    assert code == cli.EX_SOFTWARE == 70
    assert "internal error" in caplog.text and "ZeroDivisionError: boom" in caplog.text


def test_a_bad_config_exits_78_with_file_key_reason(capsys: pytest.CaptureFixture[str]) -> None:
    err = config.ConfigError("/etc/x.toml", [("ban.ban_time", "too long")])
    assert cli.run_verb(_raise(err), argparse.Namespace()) == cli.EX_CONFIG == 78
    assert capsys.readouterr().err == "/etc/x.toml: ban.ban_time: too long\n"


def test_interrupt_and_closed_pipe() -> None:
    assert cli.run_verb(_raise(KeyboardInterrupt()), argparse.Namespace()) == 130
    assert cli.run_verb(_raise(BrokenPipeError()), argparse.Namespace()) == cli.EX_OK


def test_no_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EX_USAGE
    assert "VERB" in capsys.readouterr().out
