"""The sshd_config model against the real thing: for generated configurations (keyword
case, `=` syntax, aliases, drop-ins Included anywhere, Match blocks in the main file and
in drop-ins), the model's effective values must be what `sshd -T` reports, globally and
for a connection by each Match User (`sshd -T -C`); and after the planned repair, sshd
must report the policy's values everywhere."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sshguardd.drift import sshd_edits as se
from sshguardd.drift import sshd_judge as sj
from sshguardd.drift import sshd_model as sc
from sshguardd.effects import sshd as service
from sshguardd.effects import sshd_files

DATA = Path(__file__).parent / "data"
USERS = ("alice", "bob")
VALUES = {
    "PermitRootLogin": ("yes", "no", "prohibit-password", "without-password",
                        "forced-commands-only"),
    "PasswordAuthentication": ("yes", "no"),
    "KbdInteractiveAuthentication": ("yes", "no"),
    "ChallengeResponseAuthentication": ("yes", "no"),
    "PermitEmptyPasswords": ("yes", "no"),
    "X11Forwarding": ("yes", "no"),
    "MaxAuthTries": ("2", "3", "6", "10"),
}
KEYWORDS = sorted({sc.canonical_keyword(k) for k in VALUES})


@st.composite
def setting(draw) -> str:
    kw = draw(st.sampled_from(sorted(VALUES)))
    spelled = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in kw)
    sep = draw(st.sampled_from([" ", "\t", "=", " = "]))
    return f"{spelled}{sep}{draw(st.sampled_from(VALUES[kw]))}\n"


@st.composite
def block(draw) -> str:
    lines = draw(st.lists(setting(), max_size=3))
    return f"Match User {draw(st.sampled_from(USERS))}\n" + "".join("  " + ln for ln in lines)


@st.composite
def config_file(draw, include: str | None) -> str:
    parts = draw(st.lists(st.one_of(setting(), st.just("# a comment\n"), st.just("\n")),
                          max_size=6))
    if include is not None:
        parts.insert(draw(st.integers(0, len(parts))), include)
    parts += draw(st.lists(block(), max_size=2))  # Match blocks run to the file's end
    return "".join(parts)


@pytest.fixture(scope="module")
def hostkey(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostkey")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "k")],
                   check=True)
    return d / "k"


def expected_for(model: sc.SshdConfig, keyword: str, user: str) -> str:
    """What a connection by `user` gets: the first Match User block for them that sets
    the keyword, else the global value (sshd's rule, written out for User only)."""
    for d in model.directives:
        if d.keyword == keyword and d.match and all(
                m.split()[1:] == ["User", user] for m in d.match):
            return d.value
    return model.effective(keyword).value


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_model_agrees_with_sshd(tmp_path_factory, hostkey, data):
    root = tmp_path_factory.mktemp("cfg")
    (root / "d").mkdir()
    names = data.draw(st.lists(st.sampled_from(["10-a.conf", "50-cloud-init.conf",
                                                "99-z.conf", "x.conf.disabled"]),
                               unique=True, max_size=3))
    for name in names:
        (root / "d" / name).write_text(data.draw(config_file(None)))
    main = root / "sshd_config"
    main.write_text(f"HostKey {hostkey}\nPidFile {root}/pid\n"
                    + data.draw(config_file(f"Include {root}/d/*.conf\n")))
    model = sshd_files.load(main).model
    sshd = service.Sshd()
    real = sshd.effective(main)
    for kw in KEYWORDS:
        assert sc.normalise_value(kw, model.effective(kw).value) == \
            sc.normalise_value(kw, real[kw]), (kw, main.read_text())
    for user in USERS:
        ctx = {**sj.PROBE_DEFAULTS, "user": user}
        real = sshd.effective(main, ctx)
        for kw in KEYWORDS:
            assert sc.normalise_value(kw, expected_for(model, kw, user)) == \
                sc.normalise_value(kw, real[kw]), (user, kw, main.read_text())
    # Repairing with the model's planned edits makes sshd itself report the policy, for
    # everyone, and touches no line the plan did not name.
    policy = {"PermitRootLogin": "no", "PasswordAuthentication": "no",
              "KbdInteractiveAuthentication": "no", "MaxAuthTries": "3"}
    texts = {f: Path(f).read_text() for f in model.files}
    edits = se.plan(model, sj.judge(model, policy), texts)
    for path, es in se.edits_by_file(edits).items():
        Path(path).write_text(se.apply_edits(texts[path], es))
    for ctx in (None, *({**sj.PROBE_DEFAULTS, "user": u} for u in USERS)):
        real = sshd.effective(main, ctx)
        for kw, want in sj.policy_items(policy).items():
            assert sc.normalise_value(kw, real[kw]) == want, (ctx, kw, main.read_text())
    assert len(edits) <= len(sj.policy_items(policy)) + sum(
        len(model.match_overrides(kw)) for kw in sj.policy_items(policy))
    shutil.rmtree(root)
