"""The arrows of /work/shared/ARCHITECTURE.md ("The picture"), checked on every module.

Every module of the package (and scripts/, bench/) is parsed with `ast`; every import is
counted, wherever it sits (module level, inside a function, under `if TYPE_CHECKING:`), and
so are `importlib.import_module("literal")` calls. The rooms:

    face         sshguardd.cli, sshguardd.__main__, sshguardd.commands.*
    composition  sshguardd.daemon.*
    pure         sshguardd.{detect,bans,drift}.*, contracts, config, durations
    effects      sshguardd.effects.*
    tools        sshguardd.{scan,demo}.*

Arrows allowed: face -> anything; composition -> pure, effects; tools -> pure, effects;
effects -> pure; pure -> pure. Nothing outside face imports face (scripts/gen_docs.py
reading the CLI parser is the one exception). No module imports a `_private` name from
another room's module: that is a seam that should be public.

Pure modules also may not use the system: no subprocess, threads, sockets, sqlite3, fcntl,
systemd, watchdog or prometheus_client, no clock (`time`, `datetime.now`), and no file I/O.
File I/O is found by what is called (`open()`, `os.*` other than path arithmetic, and the
`pathlib` methods that touch the file system), so `Path` stays usable as a type.

KNOWN is the shrinking list of violations that exist today, each with the room that owns
its fix. A new violation fails the test; an entry that no longer matches is printed (and
should be deleted), but does not fail, so a fix landing never turns the suite red.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sshguardd"

PURE_PACKAGES = ("sshguardd.detect", "sshguardd.bans", "sshguardd.drift")
PURE_MODULES = ("sshguardd", "sshguardd.contracts", "sshguardd.config", "sshguardd.durations")

ALLOWED = {
    "face": {"face", "composition", "pure", "effects", "tools"},
    "composition": {"composition", "pure", "effects"},
    "tools": {"tools", "pure", "effects"},
    "effects": {"effects", "pure"},
    "pure": {"pure"},
    "outside": {"composition", "pure", "effects", "tools"},
}
# scripts/gen_docs.py documents the CLI from its parser: the one reader of face allowed.
FACE_READERS = {"scripts/gen_docs.py"}

# Modules (and their submodules) a pure module must not import at all.
PURE_BANNED_MODULES = {
    "subprocess", "multiprocessing", "threading", "_thread", "concurrent", "asyncio",
    "signal", "select", "selectors", "sqlite3", "fcntl", "time", "glob", "shutil",
    "tempfile", "mmap", "ctypes", "pty", "urllib", "http", "systemd", "watchdog",
    "prometheus_client",
}
# Modules a pure module may import, but of which only these names are pure.
PURE_PARTIAL = {
    "os": {"os.path.join", "os.path.normpath", "os.path.basename", "os.path.dirname",
           "os.path.split", "os.path.splitext", "os.path.isabs", "os.path.commonpath",
           "os.fspath", "os.fsencode", "os.fsdecode", "os.PathLike", "os.sep", "os.path"},
    "socket": {"socket.AF_INET", "socket.AF_INET6", "socket.inet_pton", "socket.inet_ntop"},
}
# pathlib methods that touch the file system (`.replace`, `.rename`, `.owner`, `.group`
# left out: str and re.Match have methods of those names).
PATH_IO_METHODS = {
    "read_text", "read_bytes", "write_text", "write_bytes", "exists", "is_file", "is_dir",
    "is_symlink", "stat", "lstat", "iterdir", "rglob", "resolve", "readlink", "touch",
    "mkdir", "unlink", "rmdir", "chmod", "samefile", "expanduser",
}
CLOCK_METHODS = {"now", "utcnow", "today", "fromtimestamp"}

# Violations present today, each with the room that is fixing it (the brief's rooms).
KNOWN: dict[str, str] = {
    "sshguardd.detect.logformats imports time": "detect",
}


@dataclass(frozen=True)
class Source:
    name: str      # dotted module name, or the path for files outside the package
    path: Path
    room: str
    is_package: bool


def room_of(module: str) -> str | None:
    """The room of a sshguardd module, None for anything outside the package."""
    if module == "sshguardd.cli" or module == "sshguardd.__main__" \
            or module.startswith("sshguardd.commands"):
        return "face"
    if module.startswith("sshguardd.daemon"):
        return "composition"
    if module.startswith(("sshguardd.effects",)):
        return "effects"
    if module.startswith(("sshguardd.scan", "sshguardd.demo")):
        return "tools"
    if module in PURE_MODULES or any(module == p or module.startswith(p + ".")
                                     for p in PURE_PACKAGES):
        return "pure"
    if module.startswith("sshguardd."):
        return "unassigned"
    return None


def sources() -> Iterator[Source]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        yield Source(name, path, room_of(name) or "unassigned", is_package)
    for folder in ("scripts", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield Source(str(path.relative_to(ROOT)), path, "outside", False)


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def imports(src: Source, tree: ast.AST) -> Iterator[tuple[str, str | None]]:
    """(module, name) for every import: name is the imported attribute for `from M import
    name` when name is not itself a module, else None."""
    base = src.name.split(".") if src.room != "outside" else []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base if src.is_package else base[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if module.startswith("sshguardd") and _is_module(full):
                    yield full, None
                else:
                    yield module, alias.name
        elif isinstance(node, ast.Call) and node.args \
                and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) \
                and _dotted(node.func) in ("importlib.import_module", "import_module",
                                           "__import__"):
            yield node.args[0].value, None


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _top(module: str) -> str:
    return module.split(".")[0]


def purity_violations(src: Source, tree: ast.AST) -> Iterator[str]:
    aliases: dict[str, str] = {}  # local name -> module it names (for os/socket checks)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _top(alias.name) in PURE_BANNED_MODULES:
                    yield f"{src.name} imports {alias.name}"
                if _top(alias.name) in PURE_PARTIAL:
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if _top(node.module) in PURE_BANNED_MODULES:
                yield f"{src.name} imports {node.module}"
            if _top(node.module) in PURE_PARTIAL:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full not in PURE_PARTIAL[_top(node.module)]:
                        yield f"{src.name} uses {full}"
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        # the whole chain only (os.path.exists), not its inner parts (os.path)
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            dotted = _dotted(node)
            head, _, rest = (dotted or "").partition(".")
            if head in aliases and rest:
                full = f"{aliases[head]}.{rest}"
                if full not in PURE_PARTIAL[_top(full)]:
                    yield f"{src.name} uses {full}"
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "open":
                yield f"{src.name} calls open()"
            elif isinstance(node.func, ast.Attribute) \
                    and (_dotted(node.func) or "").partition(".")[0] not in aliases:
                if node.func.attr in PATH_IO_METHODS:
                    yield f"{src.name} calls .{node.func.attr}()"
                if node.func.attr in CLOCK_METHODS:
                    yield f"{src.name} reads the clock (.{node.func.attr}())"


def violations() -> set[str]:
    found: set[str] = set()
    for src in sources():
        tree = ast.parse(src.path.read_text(encoding="utf-8"), str(src.path))
        if src.room == "unassigned":
            found.add(f"{src.name} is in no room: add it to room_of()")
            continue
        for module, name in imports(src, tree):
            target = room_of(module)
            if target is None:
                continue
            rel = str(src.path.relative_to(ROOT))
            if target == "face" and src.room != "face" and rel in FACE_READERS:
                continue
            if target not in ALLOWED[src.room]:
                found.add(f"{src.name} imports {module} ({src.room} -> {target})")
            if name and name.startswith("_") and not name.startswith("__") \
                    and module.rsplit(".", 1)[0] != src.name.rsplit(".", 1)[0]:
                found.add(f"{src.name} imports {module}.{name} (private name)")
        if src.room == "pure":
            found.update(purity_violations(src, tree))
    return found


def test_no_forbidden_arrows() -> None:
    found = violations()
    new = sorted(found - KNOWN.keys())
    stale = sorted(KNOWN.keys() - found)
    if stale:
        print("fixed now, remove from KNOWN:\n  " + "\n  ".join(stale))
    print(f"{len(found)} known violations remain: "
          + ", ".join(sorted({KNOWN[v].split()[0] for v in found & KNOWN.keys()})))
    assert not new, "imports the architecture forbids:\n  " + "\n  ".join(new)


def test_the_checker_sees_what_it_should(tmp_path: Path) -> None:
    """The checker itself: each kind of arrow it must catch, in a module it parses."""
    code = (
        "import os, time\n"
        "from pathlib import Path\n"
        "from sshguardd.effects import files\n"
        "def f(p: Path) -> None:\n"
        "    from sshguardd.daemon import loop\n"
        "    from sshguardd.detect.classify import _memo\n"
        "    os.path.join('a', 'b')\n"
        "    os.path.exists(p)\n"
        "    p.read_text()\n"
        "    open(p)\n"
    )
    path = tmp_path / "m.py"
    path.write_text(code)
    src = Source("sshguardd.bans.m", path, "pure", False)
    tree = ast.parse(code)
    got = set(purity_violations(src, tree))
    got |= {f"imports {m}" for m, n in imports(src, tree) if n is None
            and room_of(m) not in (None, "pure")}
    got |= {f"private {n}" for _, n in imports(src, tree) if n and n.startswith("_")}
    assert got == {
        "sshguardd.bans.m imports time",
        "sshguardd.bans.m uses os.path.exists",
        "sshguardd.bans.m calls .read_text()",
        "sshguardd.bans.m calls open()",
        "imports sshguardd.effects.files",
        "imports sshguardd.daemon.loop",
        "private _memo",
    }


def test_every_known_violation_names_its_owner() -> None:
    rooms = {"gates", "daemon", "drift", "detect", "hardening", "fleet", "access", "install"}
    for violation, owner in KNOWN.items():
        assert owner.split()[0] in rooms, violation


def test_contracts_docstring_names_only_real_messages() -> None:
    """The stage diagram in contracts.py once named a Verdict, a Repair and an Alert that
    never existed; every message it names must be a type in the module."""
    import re

    from sshguardd import contracts

    doc = contracts.__doc__ or ""
    named = {n for label in re.findall(r"──(.+?)──>", doc) for n in label.split(" of ")}
    assert named, doc
    assert {n for n in named if not isinstance(getattr(contracts, n, None), type)} == set()
