"""The generated reference docs and man pages are current, and the man pages render."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sshguardd import cli, config

ROOT = Path(__file__).resolve().parent.parent
MAN = {8: ROOT / "docs/man/sshguardd.8", 5: ROOT / "docs/man/sshguardd.toml.5"}


def test_generated_docs_are_current() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts/gen_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{result.stdout}{result.stderr}\nthe code changed: run scripts/gen_docs.py")


def test_example_config_is_the_defaults() -> None:
    example = config.parse((ROOT / "config.example.toml").read_text())
    assert example == config.Config()


def _render(path: Path) -> tuple[str, str]:
    env = {**os.environ, "MANWIDTH": "100", "LC_ALL": "C.UTF-8"}
    result = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


@pytest.mark.parametrize("section", [8, 5])
def test_man_pages_render_without_warnings(section: int) -> None:
    out, err = _render(MAN[section])
    assert err == ""
    headings = re.findall(r"^([A-Z][A-Z ]+)$", out, re.M)
    expected = (["NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "SIGNALS", "FILES",
                 "EXIT STATUS", "EXAMPLES", "SEE ALSO"] if section == 8
                else ["NAME", "SYNOPSIS", "DESCRIPTION", "KEYS", "SEE ALSO"])
    assert headings == expected


def test_man_page_covers_every_verb_and_option() -> None:
    out, _ = _render(MAN[8])
    parser = cli.build_parser()
    verbs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in verbs.choices.items():  # type: ignore[attr-defined]
        assert f"sshguardd {name}" in out
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in out, f"{name} {option}"


def test_config_man_page_covers_every_key() -> None:
    out, _ = _render(MAN[5])

    def keys(model: type, prefix: str = "") -> list[str]:
        found = []
        for name, info in model.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                found += keys(ann, f"{prefix}{name}.")
            else:
                found.append(f"{prefix}{name}")
        return found

    all_keys = keys(config.Config)
    assert len(all_keys) > 50
    for dotted in all_keys:
        section, _, key = dotted.rpartition(".")
        assert f"[{section}]" in out and re.search(rf"^\s+{key}\b", out, re.M), dotted


def test_readme_is_assembled_from_docs() -> None:
    # Each README section has its source in docs/; a docs edit without re-assembling the
    # README would leave the two saying different things.
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_readme.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_readme_has_exactly_the_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].strip() for line in
                re.search(r"```sh\n(.*?)```", setup, re.S).group(1).splitlines() if line.strip()]
    assert commands == ["sudo ./install.sh", "sudo ./scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test.sh" in ci
