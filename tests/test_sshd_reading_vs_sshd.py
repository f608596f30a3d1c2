"""Differential fuzzing: the sshd_config model's line reading against the real `sshd -T -C`.

Generated configurations mix what sshd's reader is picky about (issue 11): NUL bytes
(which truncate a line *and* glue the next one on), vertical tabs, form feeds and carriage
returns, single and double quotes, backslashes, keyword case, `=` separators, Include and
Match (Address, User, All, `User=root`). For every configuration sshd accepts and the model
claims to read exactly (no `unsure` line), the value the model says applies to a
connection (root and an ordinary user, from an outside address and from inside) must be
the one `sshd -T -C` reports, for every guarded keyword. A mismatch is a bypass: the guard
would judge a line sshd never reads, or miss one it does.

Failing examples found while building the model are kept in
tests/data/sshd_reading_golden.jsonl and replayed first. The budget is fixed (max_examples)
and the test prints how many cases it ran, how many sshd rejected and how many the model
flagged as unsure.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshguardd.drift import sshd_judge as sj
from sshguardd.drift import sshd_model as sc
from sshguardd.effects import sshd as service
from sshguardd.effects import sshd_files

GOLDEN = Path(__file__).parent / "data" / "sshd_reading_golden.jsonl"
EXAMPLES = 150
VALUES = {
    "PermitRootLogin": ("yes", "no", "prohibit-password"),
    "PasswordAuthentication": ("yes", "no"),
    "KbdInteractiveAuthentication": ("yes", "no"),
    "MaxAuthTries": ("3", "6"),
}
KEYWORDS = sorted({sc.canonical_keyword(k) for k in VALUES})
# root and an ordinary user, from an outside address and from the inside network.
CONTEXTS = [{**sj.PROBE_DEFAULTS, "user": u, "addr": a}
            for u in ("root", "sshguardd-probe") for a in ("192.0.2.1", "10.1.2.3")]
MATCHES = ["Match Address *", "Match Address 10.0.0.0/8", "Match User root",
           "Match User sshguardd-probe", "Match All", "Match User=root",
           "Match Address 192.0.2.0/24,10.0.0.0/8", "match user ROOT",
           "Match User root Address 192.0.2.0/24"]
JUNK = ["\0", "\0\n", "\x0b", "\x0c", "\r", "'", '"', "\\", " ", "\t", "=", "#"]


@st.composite
def setting(draw: st.DrawFn) -> str:
    kw = draw(st.sampled_from(sorted(VALUES)))
    spelled = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in kw)
    value = draw(st.sampled_from(VALUES[kw]))
    quote = draw(st.sampled_from(["", "", '"', "'"]))
    sep = draw(st.sampled_from([" ", "\t", "=", " = ", "\t=", "  "]))
    lead = draw(st.sampled_from(["", "", "  ", "\t", "\r", "\x0c"]))
    trail = draw(st.sampled_from(["", "", " ", "\x0c", "\r", " # note", "\t#x"]))
    return f"{lead}{spelled}{sep}{quote}{value}{quote}{trail}\n"


@st.composite
def line(draw: st.DrawFn) -> str:
    text = draw(st.one_of(setting(), st.sampled_from(MATCHES).map(lambda m: m + "\n"),
                          st.just("# a comment\n"), st.just("\n")))
    # Junk goes anywhere, the newline included: a NUL before it glues the next line on.
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2]))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(JUNK)) + text[at:]
    return text


def config_text(draw: st.DrawFn, include: str | None) -> str:
    parts = draw(st.lists(line(), max_size=7))
    if include is not None:
        parts.insert(draw(st.integers(0, len(parts))), include)
    return "".join(parts)


def _addr_matches(patterns: str, addr: str) -> bool:
    for pat in patterns.split(","):
        if pat == "*" or pat == addr:
            return True
        if "/" in pat and ipaddress.ip_address(addr) in ipaddress.ip_network(pat, False):
            return True
    return False


def _matches(line: str, ctx: dict[str, str]) -> bool | None:
    """sshd's verdict for the Match criteria this test generates; None for any other."""
    words, unsure = sc.match_criteria(line)
    if unsure:
        return None
    i = 0
    while i < len(words):
        w = words[i].lower()
        if w == "all":
            i += 1
            continue
        if i + 1 >= len(words):
            return None
        arg = words[i + 1]
        if w == "address":
            try:
                if not _addr_matches(arg, ctx["addr"]):
                    return False
            except ValueError:
                return None
        elif w == "user":
            if not any(fnmatchcase(ctx["user"], p) for p in arg.split(",")):
                return False
        else:
            return None
        i += 2
    return True


def model_value(model: sc.SshdConfig, kw: str, ctx: dict[str, str],
                default: str) -> str | None:
    """What sshd applies for this connection, from the lines as the model reads them:
    sshd -T -C re-reads the files with only matching Match blocks active, so the first
    value in a matching block wins over any global value; else the first global value."""
    global_value = None
    for d in model.directives:
        if d.keyword != kw:
            continue
        if not d.match:
            global_value = d.value if global_value is None else global_value
            continue
        verdicts = [_matches(m, ctx) for m in d.match]
        if None in verdicts:
            return None
        if all(verdicts):
            return d.value
    return default if global_value is None else global_value


class Tally:
    cases = rejected = unsure = compared = 0


@pytest.fixture(scope="module")
def hostkey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hostkey")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "k")],
                   check=True)
    return d / "k"


def agree(root: Path, hostkey: Path, main_text: str, dropin: str | None,
          tally: type[Tally]) -> None:
    """Write the configuration, ask sshd and the model, and compare (see the module doc)."""
    (root / "d").mkdir(exist_ok=True)
    if dropin is not None:
        (root / "d" / "10-x.conf").write_bytes(dropin.encode("utf-8", "surrogateescape"))
    main = root / "sshd_config"
    head = f"HostKey {hostkey}\nPidFile {root}/pid\n"
    main.write_bytes((head + main_text).replace("@D@", f"{root}/d").encode(
        "utf-8", "surrogateescape"))
    tally.cases += 1
    sshd = service.Sshd()
    try:
        real_global = sshd.effective(main)
    except service.ServiceError:
        tally.rejected += 1
        return  # sshd refuses it: the guard alerts and never restarts onto it
    try:
        model = sshd_files.load(main).model
    except sc.ConfigSyntaxError as exc:
        pytest.fail(f"sshd accepts what the model rejects ({exc}):\n{main_text!r}\n{dropin!r}")
    if model.unsure:
        tally.unsure += 1
        return  # the guard alerts these lines instead of trusting the model
    tally.compared += 1
    for ctx in CONTEXTS:
        real = sshd.effective(main, ctx)
        for kw in KEYWORDS:
            want = model_value(model, kw, ctx, real_global[kw])
            if want is None:
                continue
            assert sc.normalise_value(kw, want) == sc.normalise_value(kw, real[kw]), (
                f"{kw} for {ctx['user']}@{ctx['addr']}: model {want!r}, sshd {real[kw]!r}\n"
                f"main={main_text!r}\ndropin={dropin!r}")


def golden() -> list[dict[str, str | None]]:
    return [json.loads(ln) for ln in GOLDEN.read_text().splitlines() if ln.strip()]


@pytest.mark.parametrize("case", golden(), ids=lambda c: str(c["why"])[:40])
def test_golden_configurations(case: dict[str, str | None], tmp_path: Path,
                               hostkey: Path) -> None:
    class One(Tally):
        pass

    agree(tmp_path, hostkey, str(case["main"]), case.get("dropin"), One)
    assert One.compared == 1 or case.get("expect") in ("rejected", "unsure")


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def test_model_reads_lines_as_sshd_does(tmp_path_factory: pytest.TempPathFactory,
                                        hostkey: Path, data: st.DataObject) -> None:
    root = tmp_path_factory.mktemp("cfg")
    with_dropin = data.draw(st.booleans())
    main = config_text(data.draw, "Include @D@/*.conf\n" if with_dropin else None)
    dropin = config_text(data.draw, None) if with_dropin else None
    agree(root, hostkey, main, dropin, Tally)


def test_zz_report_case_counts() -> None:
    # Runs after the fuzzer in this module (pytest keeps file order).
    print(f"\nsshd reading fuzzer: {Tally.cases} cases, {Tally.rejected} rejected by sshd, "
          f"{Tally.unsure} flagged unsure by the model, {Tally.compared} compared "
          f"({len(CONTEXTS)} contexts x {len(KEYWORDS)} keywords each)")
    assert Tally.cases >= EXAMPLES
