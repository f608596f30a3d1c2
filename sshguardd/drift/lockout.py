"""The lockout guard's judgment: after this repair, can anyone still log in? Pure.

It judges data it is given, never the host: the accounts (`Account`, from /etc/passwd,
/etc/group, /etc/shadow and /etc/shells), what sshd itself answers for each account with the
candidate configuration (`sshd -T -C user=U,host=H,addr=A`, as keyword -> value), and the
authorized_keys files that answer names (`KeyFile`, read by sshguardd.effects.accounts).

A way in is one AuthenticationMethods list (or, with `any`, one method) whose every method
this account can complete, for an account sshd lets in at all:

- sshd lets the account in: a shell listed in /etc/shells (nologin, false and sync are no
  admin path), not expired, not '!'-locked when UsePAM is no (sshd refuses every method
  then), DenyUsers/AllowUsers/DenyGroups/AllowGroups as sshd matches them for the probe's
  host and address, root only as PermitRootLogin allows, no ForceCommand, no
  ChrootDirectory;
- publickey: PubkeyAuthentication yes and a key line sshd would accept in one of the
  account's AuthorizedKeysFile files (StrictModes ownership and modes, the key type in
  PubkeyAcceptedAlgorithms) that is an admin path: no `command=`, a pty (`restrict` and
  `no-pty` take it away unless `pty` follows), a `from=` that admits the probe, not past its
  `expiry-time`; or an AuthorizedKeysCommand or TrustedUserCAKeys, which sshguardd cannot
  inspect and so trusts (EC2 Instance Connect's eic_run_authorized_keys is named as such;
  sshd's answer includes it whether it is set in sshd_config or on sshd's command line);
  cloud-init's `disable_root` key prefix (a forced command that prints "Please login as
  the user ..." and exits 142) makes root's key no way in, and is named as such;
- password: PasswordAuthentication yes and a usable hash (an empty one only with
  PermitEmptyPasswords yes); keyboard-interactive the same through PAM (UsePAM yes);
- hostbased and gssapi-with-mic, when enabled, are trusted like a keys command.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sshguardd.drift import lockout_keys as keys

# Settings whose repair can change who gets in: only these go through the guard.
GUARDED_KEYWORDS = frozenset({
    "passwordauthentication", "kbdinteractiveauthentication", "permitrootlogin",
    "pubkeyauthentication", "authenticationmethods", "usepam", "permitemptypasswords",
    "authorizedkeysfile", "authorizedkeyscommand", "authorizedkeyscommanduser",
    "allowusers", "denyusers", "allowgroups", "denygroups", "forcecommand",
    "chrootdirectory", "strictmodes", "pubkeyacceptedalgorithms", "trustedusercakeys",
    "hostbasedauthentication", "gssapiauthentication",
})
# Switching these off also shuts out accounts the guard cannot see (LDAP/sssd users,
# PAM modules): with no way in visible, such a repair is refused rather than trusted.
PASSWORD_KEYWORDS = frozenset({"passwordauthentication", "kbdinteractiveauthentication",
                               "usepam", "authenticationmethods"})
FALLBACK_NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false",
                    "/bin/sync", "/usr/bin/sync")


@dataclass(frozen=True, slots=True)
class Account:
    """One /etc/passwd account as the guard needs it. Never carries the hash itself."""

    name: str
    uid: int
    home: str
    shell: str
    groups: tuple[str, ...] = ()   # primary and supplementary group names
    login_shell: bool = True
    password: str = "none"         # "usable", "empty", "locked" ('!' or '*' form), "none"
    locked: bool = False           # the field starts with '!' (sshd without PAM refuses)
    expired: bool = False


@dataclass(frozen=True, slots=True)
class PathStat:
    path: str
    uid: int
    mode: int


@dataclass(frozen=True, slots=True)
class KeyFile:
    """One authorized_keys file as read: text, or why it was not (missing, a symlink, not
    a regular file, too large, timed out); the file's and its directories' owner and mode
    up to the home directory (or /), for StrictModes."""

    path: str
    text: str | None
    problem: str = ""
    stat: PathStat | None = None
    parents: tuple[PathStat, ...] = ()


@dataclass(frozen=True, slots=True)
class Access:
    """The ways in sshd would give one account (empty: none, and why not)."""

    account: str
    ways: tuple[str, ...]
    why_not: str = ""


# ---------------------------------------------------------------------------- accounts

def parse_accounts(passwd: str, group: str, shadow: str, shells: str | None, *,
                   today: int, lock_root: bool = False) -> list[Account]:
    """Accounts from the texts of /etc/passwd, /etc/group, /etc/shadow and /etc/shells
    (None: unreadable, then any shell but nologin/false/sync counts). today is days since
    the epoch (shadow's unit); lock_root judges root's password as the shadow policy will
    leave it (locked)."""
    gid_names: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for line in group.splitlines():
        f = line.split(":")
        if len(f) >= 4 and not line.startswith("#"):
            gid_names.setdefault(f[2], f[0])
            for m in filter(None, f[3].split(",")):
                members.setdefault(m, []).append(f[0])
    pw_fields: dict[str, list[str]] = {}
    for line in shadow.splitlines():
        f = line.split(":")
        if len(f) >= 2 and not line.startswith("#"):
            pw_fields.setdefault(f[0], f)
    valid_shells = None if shells is None else {
        s.strip() for s in shells.splitlines() if s.strip() and not s.startswith("#")}
    out = []
    for line in passwd.splitlines():
        f = line.split(":")
        if len(f) < 7 or line.startswith("#") or not f[2].isdigit():
            continue
        name, uid, gid, home, shell = f[0], int(f[2]), f[3], f[5], f[6] or "/bin/sh"
        login = (shell in valid_shells if valid_shells is not None
                 else shell not in FALLBACK_NOLOGIN and not shell.endswith("/nologin"))
        sp = pw_fields.get(name)
        field = sp[1] if sp else (f[1] if f[1] not in ("x", "*") else "*")
        if lock_root and uid == 0 and field and not field.startswith("!"):
            field = "!" + field
        if field == "":
            state = "empty"
        elif field.startswith(("!", "*")) or len(field) < 13:
            state = "locked"
        else:
            state = "usable"
        expired = False
        if sp and len(sp) > 7 and sp[7].strip().isdigit():
            expired = int(sp[7]) <= today  # shadow(5): expired *on* that day
        groups = tuple(dict.fromkeys(([gid_names[gid]] if gid in gid_names else [])
                                     + members.get(name, [])))
        out.append(Account(name, uid, home, shell, groups, login, state,
                           field.startswith("!"), expired))
    return out


def probe_order(accounts: Iterable[Account]) -> list[Account]:
    """Accounts worth asking sshd about, likeliest admins first: people (uid >= 1000),
    then root, then other system accounts; no-shell and expired accounts are left out."""
    live = [a for a in accounts if (a.login_shell or a.uid == 0) and not a.expired]
    return sorted(live, key=lambda a: (0 if a.uid >= 1000 else 1 if a.uid == 0 else 2,
                                       a.uid, a.name))


def key_file_paths(effective: Mapping[str, str], account: Account) -> list[str]:
    """The account's AuthorizedKeysFile paths, expanded as sshd does (%h %u %U %%;
    relative paths are under the home directory)."""
    out = []
    for pattern in effective.get("authorizedkeysfile", "").split():
        if pattern.lower() == "none":
            continue
        p, i = [], 0
        while i < len(pattern):
            c = pattern[i]
            if c == "%" and i + 1 < len(pattern):
                p.append({"h": account.home, "u": account.name, "U": str(account.uid),
                          "%": "%"}.get(pattern[i + 1], "%" + pattern[i + 1]))
                i += 2
                continue
            p.append(c)
            i += 1
        path = "".join(p)
        out.append(path if path.startswith("/") else f"{account.home.rstrip('/')}/{path}")
    return out


# ---------------------------------------------------------------------------- judging

def _yes(eff: Mapping[str, str], kw: str) -> bool:
    return eff.get(kw, "no").lower() == "yes"


def _set(eff: Mapping[str, str], kw: str) -> bool:
    return eff.get(kw, "none").strip().lower() not in ("", "none")


def _strict_ok(kf: KeyFile, account: Account) -> str:
    """'' when sshd's StrictModes check (auth.c auth_secure_path) passes."""
    for st in ((kf.stat,) if kf.stat else ()) + kf.parents:
        if st.uid not in (0, account.uid):
            return f"{st.path} is owned by uid {st.uid}"
        if st.mode & 0o022:
            return f"{st.path} is group/other-writable ({st.mode & 0o777:o})"
    return ""


# cloud-init's cc_ssh disable_root: root's keys get `no-port-forwarding,no-agent-forwarding,
# no-X11-forwarding,command="echo 'Please login as the user \"U\" rather than the user
# \"root\".';echo;sleep 10;exit 142"` (its disable_root_opts default).
CLOUD_INIT_DISABLE_ROOT = "Please login as the user"
EIC_COMMAND = "eic_run_authorized_keys"


def keys_command(command: str) -> str:
    """How an AuthorizedKeysCommand is named in a way in."""
    program = command.split()[0] if command.split() else command
    if program.rsplit("/", 1)[-1] == EIC_COMMAND:
        return f"EC2 Instance Connect (AuthorizedKeysCommand {command})"
    return f"AuthorizedKeysCommand {command}"


def _usable_key(k: keys.KeyLine, eff: Mapping[str, str], host: str, addr: str,
                now: float, root_keys: str) -> str:
    """'' if this key line is an admin path, else why not."""
    if k.command is not None:
        if CLOUD_INIT_DISABLE_ROOT in k.command and "exit 142" in k.command:
            return "command= (cloud-init disable_root)"
        return "command="
    if root_keys == "forced-commands-only":
        return "root: forced commands only"
    if not k.pty:
        return "restrict" if k.restricted else "no-pty"
    if k.from_ is not None and not keys.match_host_and_ip(host, addr, k.from_):
        return "from= excludes the address"
    if k.expiry is not None and k.expiry <= now:
        return "expiry-time passed"
    accepted = eff.get("pubkeyacceptedalgorithms")
    if accepted and not k.cert_authority:
        algos = set(accepted.replace("\n", ",").split(","))
        if not algos.intersection(keys.ALGORITHMS.get(k.keytype, (k.keytype,))):
            return f"{k.keytype} not in PubkeyAcceptedAlgorithms"
    return ""


def _allowed(account: Account, eff: Mapping[str, str], host: str, addr: str) -> str:
    """'' when auth.c allowed_user would let the account in from the probe."""
    if not account.login_shell:
        return f"shell {account.shell} is no login shell"
    if account.expired:
        return "account expired"
    if account.locked and not _yes(eff, "usepam"):
        return "password field '!'-locked and UsePAM no"
    for p in eff.get("denyusers", "").split():
        if keys.match_user(account.name, host, addr, p):
            return f"DenyUsers {p}"
    allow = eff.get("allowusers", "").split()
    if allow and not any(keys.match_user(account.name, host, addr, p) for p in allow):
        return "not in AllowUsers"
    deny_g = eff.get("denygroups", "").split()
    if any(keys.match_pattern(g, p) for g in account.groups for p in deny_g):
        return "in DenyGroups"
    allow_g = eff.get("allowgroups", "").split()
    if allow_g and not any(keys.match_pattern(g, p) for g in account.groups for p in allow_g):
        return "not in AllowGroups"
    if account.uid == 0 and eff.get("permitrootlogin", "no").lower() == "no":
        return "PermitRootLogin no"
    if _set(eff, "forcecommand"):
        return f"ForceCommand {eff['forcecommand']}"
    if _set(eff, "chrootdirectory"):
        return f"ChrootDirectory {eff['chrootdirectory']}"
    return ""


def access(account: Account, eff: Mapping[str, str], files: Sequence[KeyFile], *,
           host: str, addr: str, now: float) -> Access:
    """The ways in sshd (answering `eff` for this account) would give it."""
    why = _allowed(account, eff, host, addr)
    if why:
        return Access(account.name, (), why)
    root_keys = eff.get("permitrootlogin", "no").lower() if account.uid == 0 else "yes"
    passwords_ok = account.uid != 0 or root_keys == "yes"
    methods: dict[str, str] = {}   # method -> how (empty when unavailable)
    notes: list[str] = []
    if _yes(eff, "pubkeyauthentication"):
        if _set(eff, "authorizedkeyscommand") and _set(eff, "authorizedkeyscommanduser"):
            methods["publickey"] = keys_command(eff["authorizedkeyscommand"])
        elif _set(eff, "trustedusercakeys"):
            methods["publickey"] = f"certificates (TrustedUserCAKeys {eff['trustedusercakeys']})"
        else:
            for kf in files:
                if kf.text is None:
                    if kf.problem != "missing":
                        notes.append(f"{kf.path}: {kf.problem}")
                    continue
                bad = _strict_ok(kf, account) if _yes(eff, "strictmodes") else ""
                found = keys.parse_keys(kf.text)
                if bad and found:
                    notes.append(f"{kf.path}: StrictModes: {bad}")
                    continue
                why_keys = [r for k in found
                            if (r := _usable_key(k, eff, host, addr, now, root_keys))]
                if len(why_keys) < len(found):
                    methods["publickey"] = f"key in {kf.path}"
                    break
                if found:
                    notes.append(f"{kf.path}: {len(found)} key(s), none usable ("
                                 + ", ".join(sorted(set(why_keys))) + ")")
            else:
                if not notes:
                    notes.append("no authorized key")
    else:
        notes.append("PubkeyAuthentication no")
    pw = account.password == "usable" or (account.password == "empty"
                                          and _yes(eff, "permitemptypasswords"))
    if pw and passwords_ok:
        if _yes(eff, "passwordauthentication"):
            methods["password"] = "password"
        if _yes(eff, "kbdinteractiveauthentication") and _yes(eff, "usepam"):
            methods["keyboard-interactive"] = "keyboard-interactive (PAM)"
        if "password" not in methods and "keyboard-interactive" not in methods:
            notes.append("password set but PasswordAuthentication (and PAM "
                         "keyboard-interactive) off")
    elif not pw:
        notes.append(f"password {account.password}")
    else:
        notes.append("root may not use a password")
    for m, kw in (("hostbased", "hostbasedauthentication"),
                  ("gssapi-with-mic", "gssapiauthentication")):
        if _yes(eff, kw):
            methods[m] = m
    ways = []
    spec = eff.get("authenticationmethods", "any").strip()
    lists = [["any"]] if spec.lower() == "any" else [s.split(",") for s in spec.split()]
    for chain in lists:
        if chain == ["any"]:
            ways += list(methods.values())
            continue
        got = [methods.get(m.split(":", 1)[0]) for m in chain]
        if all(got):
            ways.append(" + ".join(g for g in got if g))
    if ways:
        return Access(account.name, tuple(dict.fromkeys(ways)))
    have = ", ".join(sorted(methods)) or "none"
    if spec.lower() != "any":
        notes.insert(0, f"AuthenticationMethods {spec} (has: {have})")
    return Access(account.name, (), "; ".join(notes) or "no method")


# ---------------------------------------------------------------------------- verdict

def reason(keyword: str, after: Sequence[Access], before: Sequence[Access] | None,
           checked_all: bool = True) -> str | None:
    """Why repairing `keyword` must be refused, or None.

    after: what sshd would give each account with the repair applied (the guard may stop
    at the first account with a way in); before: the same without the repair (None if not
    asked because after has a way in). Refused when no way in remains and either there
    was one before (the repair removes the last) or the repair switches passwords off
    while no way in is visible at all (accounts the guard cannot see use passwords)."""
    if any(a.ways for a in after):
        return None
    had = [a for a in (before or ()) if a.ways]
    if not had and keyword not in PASSWORD_KEYWORDS and checked_all:
        return None
    shown = "; ".join(f"{a.account}: {a.why_not}" for a in after[:6])
    more = f" (+{len(after) - 6} more)" if len(after) > 6 else ""
    if had and all(a.account == "root" for a in had) and keyword == "permitrootlogin":
        head = ("root is the only account with an authorized key or other way in "
                f"({had[0].ways[0]}); forbidding root logins would lock everyone out")
    elif keyword in ("passwordauthentication", "kbdinteractiveauthentication"):
        head = ("no account that can log in has an authorized key sshd would accept; "
                f"turning {keyword} off would lock everyone out")
    else:
        head = f"after repairing {keyword} nobody could log in"
    if not checked_all:
        head += " (not every account could be judged in time)"
    return f"{head}. sshd says: {shown or 'no account with a login shell'}{more}"


ADVICE = ("give an account that may log in after the repair (not root while "
          "PermitRootLogin no) a key in its AuthorizedKeysFile, without command=, restrict "
          "or a from= that excludes you, owned by that user and not group/other-writable; "
          "or set AuthorizedKeysCommand (EC2 Instance Connect); or register "
          "amazon-ssm-agent (Session Manager); or repair by hand and set "
          "drift.lockout_guard = false")


def advice(refusal: str) -> str:
    """What the admin must do so that the refused repair can go ahead."""
    return ADVICE
