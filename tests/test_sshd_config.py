"""The pure sshd_config model: sshd's reading rules, judging, and byte-preserving edits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sshguardd.drift import sshd_edits as se
from sshguardd.drift import sshd_judge as sj
from sshguardd.drift import sshd_model as sc

POLICY = {"PermitRootLogin": "no", "PasswordAuthentication": "no",
          "KbdInteractiveAuthentication": "no", "PermitEmptyPasswords": "no"}


def model_of(files: dict[str, str], main: str = "/etc/ssh/sshd_config"):
    import fnmatch

    def expand(pattern: str) -> list[str]:
        return sorted(p for p in files if fnmatch.fnmatchcase(p, pattern)
                      and not p.rsplit("/", 1)[-1].startswith("."))

    return sc.parse(main, files.get, expand)


def findings(files, policy=POLICY):
    return {(f.item): f for f in sj.judge(model_of(files), policy)}


def repaired(files, policy=POLICY):
    m = model_of(files)
    edits = se.plan(m, sj.judge(m, policy), files)
    out = dict(files)
    for path, es in se.edits_by_file(edits).items():
        out[path] = se.apply_edits(files[path], es)
    return out


DEBIAN_MAIN = """\
# This is the sshd server system-wide configuration file.
Include /etc/ssh/sshd_config.d/*.conf

#PermitRootLogin prohibit-password
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
Subsystem\tsftp\t/usr/lib/openssh/sftp-server

# Example of overriding settings on a per-user basis
#Match User anoncvs
#\tX11Forwarding no
"""


def test_keywords_case_insensitive_and_first_value_wins():
    f = findings({"/etc/ssh/sshd_config":
                  "permitrootlogin no\nPERMITROOTLOGIN yes\nPermitRootLogin yes\n"})
    assert f["permitrootlogin"].compliant
    assert f["permitrootlogin"].source == sc.Location("/etc/ssh/sshd_config", 1)


@pytest.mark.parametrize("line,value", [
    ("PermitRootLogin yes", "yes"),
    ("PermitRootLogin=yes", "yes"),
    ("PermitRootLogin = yes", "yes"),
    ("  PermitRootLogin\t\"yes\"  # old comment", "yes"),
    ("PermitRootLogin without-password", "without-password"),
])
def test_line_syntaxes(line, value):
    f = findings({"/etc/ssh/sshd_config": line + "\n"})["permitrootlogin"]
    assert f.actual == value and not f.compliant


def test_dropin_ahead_of_main_file_wins_cloud_init_case():
    files = {
        "/etc/ssh/sshd_config": DEBIAN_MAIN + "PasswordAuthentication no\n",
        "/etc/ssh/sshd_config.d/50-cloud-init.conf": "PasswordAuthentication yes\n",
    }
    f = findings(files)["passwordauthentication"]
    assert f.actual == "yes"
    assert str(f.source) == "/etc/ssh/sshd_config.d/50-cloud-init.conf:1"


def test_include_globs_read_in_lexical_order_and_relative_to_etc_ssh():
    files = {
        "/etc/ssh/sshd_config": "Include sshd_config.d/*.conf\n",
        "/etc/ssh/sshd_config.d/20-b.conf": "PermitRootLogin no\n",
        "/etc/ssh/sshd_config.d/10-a.conf": "PermitRootLogin yes\n",
        "/etc/ssh/sshd_config.d/.hidden.conf": "PasswordAuthentication yes\n",
        "/etc/ssh/sshd_config.d/30-c.conf.disabled": "PasswordAuthentication yes\n",
    }
    m = model_of(files)
    assert m.files == ("/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/10-a.conf",
                       "/etc/ssh/sshd_config.d/20-b.conf")
    assert m.effective("PermitRootLogin").value == "yes"
    assert m.effective("passwordauthentication").source is None  # default
    assert m.included_dirs == ["/etc/ssh", "/etc/ssh/sshd_config.d"]


def test_missing_include_is_ignored_like_sshd():
    m = model_of({"/etc/ssh/sshd_config": "Include /nonexistent/*.conf /etc/ssh/x\n"})
    assert m.files == ("/etc/ssh/sshd_config",)


def test_defaults_when_nothing_set():
    f = findings({"/etc/ssh/sshd_config": DEBIAN_MAIN})
    assert f["permitrootlogin"].actual == "prohibit-password"
    assert f["permitrootlogin"].source is None and not f["permitrootlogin"].compliant
    assert f["kbdinteractiveauthentication"].compliant
    assert f["permitemptypasswords"].compliant


def test_sshd_T_decides_what_the_model_has_no_default_for():
    m = model_of({"/etc/ssh/sshd_config": ""})
    (f,) = sj.judge(m, {"ClientAliveInterval": "300"}, {"clientaliveinterval": "0"})
    assert f.actual == "0" and not f.compliant


def test_deprecated_alias_counts_as_the_same_keyword():
    f = findings({"/etc/ssh/sshd_config":
                  "ChallengeResponseAuthentication yes\nKbdInteractiveAuthentication no\n"})
    assert f["kbdinteractiveauthentication"].actual == "yes"


def test_without_password_equals_prohibit_password():
    (f,) = sj.judge(model_of({"/etc/ssh/sshd_config": "PermitRootLogin without-password\n"}),
                    {"PermitRootLogin": "prohibit-password"})
    assert f.compliant


def test_match_block_reenabling_passwords_is_drift():
    files = {"/etc/ssh/sshd_config":
             "PasswordAuthentication no\nMatch User bob\n  PasswordAuthentication yes\n"
             "  PasswordAuthentication no\nMatch all\n  PasswordAuthentication no\n"}
    fs = sj.judge(model_of(files), {"PasswordAuthentication": "no"})
    assert [(f.item, f.compliant) for f in fs] == [
        ("passwordauthentication", True),
        ("passwordauthentication (Match User bob)", False),
        ("passwordauthentication (Match all)", True),
    ]


def test_match_in_included_file_ends_at_its_end():
    # Verified with sshd -T: the Match in 10.conf does not swallow 20.conf's line.
    files = {
        "/etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\n",
        "/etc/ssh/sshd_config.d/10.conf": "Match User bob\nPermitRootLogin yes\n",
        "/etc/ssh/sshd_config.d/20.conf": "PasswordAuthentication yes\n",
    }
    m = model_of(files)
    assert m.effective("passwordauthentication").value == "yes"
    assert m.effective("permitrootlogin").source is None
    assert [d.match for d in m.match_overrides("permitrootlogin")] == [("Match User bob",)]


def test_include_inside_match_brings_lines_into_the_match():
    files = {
        "/etc/ssh/sshd_config": "Match Address 10.0.0.0/8\nInclude /etc/ssh/extra\n",
        "/etc/ssh/extra": "PermitRootLogin yes\n",
    }
    m = model_of(files)
    assert m.effective("permitrootlogin").source is None
    (d,) = m.match_overrides("permitrootlogin")
    assert d.match == ("Match Address 10.0.0.0/8",)


def test_include_loop_is_an_error_not_a_hang():
    with pytest.raises(sc.ConfigSyntaxError):
        model_of({"/etc/ssh/sshd_config": "Include /etc/ssh/sshd_config\n"})


def test_repair_changes_the_winning_line_only():
    main = DEBIAN_MAIN + "PermitRootLogin  yes   # set by someone\nPermitRootLogin no\n"
    out = repaired({"/etc/ssh/sshd_config": main}, {"PermitRootLogin": "no"})
    assert out["/etc/ssh/sshd_config"] == main.replace(
        "PermitRootLogin  yes   # set by someone", "PermitRootLogin  no   # set by someone")


def test_repair_in_dropin_leaves_main_file_alone():
    files = {
        "/etc/ssh/sshd_config": DEBIAN_MAIN + "PasswordAuthentication no\n",
        "/etc/ssh/sshd_config.d/50-cloud-init.conf":
            "# written by cloud-init\r\nPasswordAuthentication=yes\r\n",
    }
    out = repaired(files, {"PasswordAuthentication": "no"})
    assert out["/etc/ssh/sshd_config"] == files["/etc/ssh/sshd_config"]
    assert out["/etc/ssh/sshd_config.d/50-cloud-init.conf"] == \
        "# written by cloud-init\r\nPasswordAuthentication=no\r\n"


def test_missing_setting_is_added_before_first_match():
    main = "UsePAM yes\nMatch User bob\n  X11Forwarding no\n"
    out = repaired({"/etc/ssh/sshd_config": main}, {"PermitRootLogin": "no"})
    assert out["/etc/ssh/sshd_config"] == \
        "UsePAM yes\nPermitRootLogin no\nMatch User bob\n  X11Forwarding no\n"
    assert model_of(out).effective("permitrootlogin").value == "no"


def test_missing_setting_appended_to_file_without_final_newline():
    out = repaired({"/etc/ssh/sshd_config": "UsePAM yes"}, {"PermitRootLogin": "no"})
    assert out["/etc/ssh/sshd_config"] == "UsePAM yes\nPermitRootLogin no\n"


def test_match_override_repaired_in_place():
    main = "PasswordAuthentication no\nMatch User bob\n\tPasswordAuthentication yes\n"
    out = repaired({"/etc/ssh/sshd_config": main}, {"PasswordAuthentication": "no"})
    assert out["/etc/ssh/sshd_config"] == main.replace("\tPasswordAuthentication yes",
                                                       "\tPasswordAuthentication no")


def test_stale_edit_refused():
    files = {"/etc/ssh/sshd_config": "PermitRootLogin yes\n"}
    m = model_of(files)
    edits = se.plan(m, sj.judge(m, {"PermitRootLogin": "no"}), files)
    with pytest.raises(se.StaleEdit):
        se.apply_edits("PermitRootLogin prohibit-password\n", edits)


def test_policy_values_from_toml_types():
    assert sj.policy_items({"X11Forwarding": False, "MaxAuthTries": 3}) == {
        "x11forwarding": "no", "maxauthtries": "3"}


def test_rewrite_includes_points_at_copies():
    files = {"/etc/ssh/sshd_config": "Include /etc/ssh/d/*.conf\nInclude /none/*\nX 1\n",
             "/etc/ssh/d/a.conf": "", "/etc/ssh/d/b.conf": ""}
    m = model_of(files)
    out = se.rewrite_includes(files["/etc/ssh/sshd_config"], "/etc/ssh/sshd_config", m,
                              {"/etc/ssh/d/a.conf": "/t/1-a", "/etc/ssh/d/b.conf": "/t/2 b"})
    assert out == 'Include /t/1-a "/t/2 b"\n# Include /none/*\nX 1\n'


_word = st.text(alphabet="abcdefgh0123456789-_./", min_size=1, max_size=8)
_line = st.one_of(
    st.builds(lambda k, v: f"{k} {v}\n", st.sampled_from(
        ["PermitRootLogin", "passwordauthentication", "UsePAM", "X11Forwarding"]), _word),
    st.builds(lambda c: f"# {c}\n", _word),
    st.just("\n"),
    st.builds(lambda k, v: f"{k}={v}\n", st.sampled_from(["PermitRootLogin", "Port"]), _word),
    st.builds(lambda u: f"Match User {u}\n", _word),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_line, max_size=25))
def test_repair_always_complies_and_touches_at_most_one_line_per_item(lines):
    text = "".join(lines)
    files = {"/etc/ssh/sshd_config": text}
    policy = {"PermitRootLogin": "no", "PasswordAuthentication": "no"}
    out = repaired(files, policy)["/etc/ssh/sshd_config"]
    assert all(f.compliant for f in sj.judge(model_of({"/etc/ssh/sshd_config": out}), policy))
    before, after = text.splitlines(), out.splitlines()
    if len(before) == len(after):
        changed = sum(1 for a, b in zip(before, after, strict=True) if a != b)
    else:
        changed = len(after) - len(before)
    bad = [f for f in sj.judge(model_of(files), policy) if not f.compliant]
    assert changed <= len(bad)
    # Nothing but the edited lines differs.
    if len(before) == len(after):
        for a, b in zip(before, after, strict=True):
            assert a == b or a.split()[0].split("=")[0] == b.split()[0].split("=")[0]


@pytest.mark.parametrize("match,spec", [
    (("Match User bob",), {"user": "bob"}),
    (("Match Address 10.0.0.0/8,!10.1.0.0/16 User admin*",),
     {"addr": "10.0.0.1", "user": "adminx"}),
    (("Match all",), {}),
    (("Match LocalPort 2222", "Match Host *.example.com"),
     {"lport": "2222", "host": "x.example.com"}),
])
def test_match_context_probes(match, spec):
    assert sj.match_context(match) == {**sj.PROBE_DEFAULTS, **spec}


@pytest.mark.parametrize("match", [("Match Group wheel",), ("Match User !bob",),
                                   ("Match LocalPort any",)])
def test_match_context_cannot_fake(match):
    assert sj.match_context(match) is None


def test_identical_match_lines_are_separate_blocks():
    m = model_of({"/etc/ssh/sshd_config": "Match User bob\nPermitRootLogin yes\n"
                  "Match User bob\nPermitRootLogin no\n"})
    assert [d.location.line for d in m.match_overrides("permitrootlogin")] == [2, 4]


def test_multi_valued_keywords_are_not_judged_but_named():
    policy = {"AllowUsers": "alice", "PermitRootLogin": "no"}
    m = model_of({"/etc/ssh/sshd_config": "AllowUsers bob\nAllowUsers alice\n"})
    assert [f.keyword for f in sj.judge(m, policy)] == ["permitrootlogin"]
    assert sj.policy_problems(policy) == [
        ("allowusers: its lines accumulate in sshd_config, so no single line decides it; "
         "not enforced")]
