"""The lockout guard: would enforcing this setting lock every key holder out?

Before sshguardd turns password logins off, someone who may still log in must have a key;
before it forbids root logins, root must not be the only account with one. Keys count
from a non-empty `authorized_keys` (the effective AuthorizedKeysFile, with sshd's %h, %u,
%U and %% tokens, relative paths under the home directory), or from any
AuthorizedKeysCommand (EC2 Instance Connect, LDAP, ...), which sshguardd cannot inspect
and so trusts.

Reads /etc/passwd and home directories; takes the shadow text as data (it only looks for
'!'-locked accounts, which sshd without PAM refuses even with a key).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from sshguardd.drift import shadow_rules as shadow

from sshguardd.drift import sshd_model as sshd_config
GUARDED_KEYWORDS = ("passwordauthentication", "kbdinteractiveauthentication",
                    "permitrootlogin")
NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")


def has_keys(path: str) -> bool:
    """A readable file with at least one line that is not blank or a comment."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return any(line.strip() and not line.lstrip().startswith("#") for line in f)
    except OSError:
        return False


def key_holders(model: sshd_config.SshdConfig, passwd: Path,
                shadow_text: str = "") -> tuple[list[str], int] | str:
    """(accounts with a login shell and a non-empty authorized keys file, accounts
    checked), or a reason string when keys come from elsewhere or cannot be judged.
    uid 0 accounts are reported as "root" (sshd's PermitRootLogin is about uid 0)."""
    akc = model.effective("authorizedkeyscommand").value
    if akc and akc.lower() != "none":
        return f"AuthorizedKeysCommand {akc}"
    files = [f for f in model.effective("authorizedkeysfile").value.split()
             if f.lower() != "none"]
    usepam = model.effective("usepam").value.lower() == "yes"
    try:
        accounts = passwd.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"cannot read {passwd}: {exc}"
    locked = {name for _, name, pw in shadow.entries(shadow_text) if pw.startswith("!")}
    holders, checked = [], 0
    for line in accounts.splitlines():
        f = line.split(":")
        if len(f) < 7 or line.startswith("#"):
            continue
        name, uid, home, shell = f[0], f[2], f[5], f[6]
        if shell in NOLOGIN_SHELLS or shell.endswith("/nologin"):
            continue
        if not usepam and name in locked:
            continue  # sshd without PAM refuses keys for a '!'-locked account
        checked += 1
        for pattern in files:
            p = (pattern.replace("%h", home).replace("%u", name).replace("%U", uid)
                 .replace("%%", "%"))
            if not p.startswith("/"):
                p = os.path.join(home, p)
            if has_keys(p):
                holders.append("root" if uid == "0" else name)
                break
    return holders, checked


def reason(model: sshd_config.SshdConfig, policy: Mapping[str, str], keyword: str,
           passwd: Path, shadow_text: str = "") -> str | None:
    """Why enforcing `keyword` (canonical) now would lock every key holder out, or None.

    Passwords off: someone who may log in after the repair must have a key (root counts
    only if the policy lets root log in with one). PermitRootLogin no: if root is the only
    account with a key, it must keep it."""
    found = key_holders(model, passwd, shadow_text)
    if isinstance(found, str):
        return None if found.startswith("AuthorizedKeysCommand") else found
    holders, checked = found
    root_policy = policy.get("permitrootlogin", model.effective("permitrootlogin").value)
    root_keys_ok = sshd_config.normalise_value("permitrootlogin", root_policy) in (
        "yes", "prohibit-password")
    if keyword == "permitrootlogin":
        if holders and all(h == "root" for h in holders) and not root_keys_ok:
            return ("root is the only account with an authorized key; forbidding root "
                    "logins would lock everyone out (add a key for another account)")
        return None
    if any(h != "root" or root_keys_ok for h in holders):
        return None
    files = model.effective("authorizedkeysfile").value
    return (f"no account that can log in has an authorized key ({checked} checked "
            f"for {files}) and no AuthorizedKeysCommand is set; turning passwords off "
            "would lock everyone out")
