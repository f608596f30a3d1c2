"""The configuration: one TOML file, validated once at start, frozen afterwards.

Every default here is the production value, so an empty file is a working configuration.
Unknown keys are errors (a typo must not silently fall back to a default), and numbers are
range-checked. Durations are written as "90s", "10m", "1h30m", "7d", "1w" or plain seconds
and are bounded (sshguardd.durations). A value that would turn a protection off or would be
cut short silently is an error naming its key, never a quiet fallback. Pure: this parses
text; effects/config_file.py reads the file.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from sshguardd.durations import BanLength, Duration, above_zero, at_most, to_text

DEFAULT_PATH = Path("/etc/sshguardd/config.toml")
# The drift guard waits this long after a change before judging: longer leaves drift in
# force that long (a few events of one `sed -i` arrive within milliseconds).
MAX_DEBOUNCE = 60.0


class KeyProblem(ValueError):
    """A model-level check that blames one key of its section (so the message names it)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        super().__init__(reason)


def _network(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an address or CIDR string")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError as exc:
        raise ValueError(f"not an IP address or network: {value!r}") from exc


Network = Annotated[str, BeforeValidator(_network)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonConfig(_Section):
    state_dir: Path = Path("/var/lib/sshguardd")
    runtime_dir: Path = Path("/run/sshguardd")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class SourceConfig(_Section):
    """Where sshd's messages are read from."""

    backend: Literal["journal", "file"] = "journal"
    # Trusted journal fields only: _SYSTEMD_UNIT or _COMM, never SYSLOG_IDENTIFIER, which
    # any local user can forge with `logger -t sshd`.
    units: tuple[str, ...] = ("ssh.service", "sshd.service")
    commands: tuple[str, ...] = ("sshd", "sshd-session")
    journal_directory: Path | None = None  # None: the system journal
    files: tuple[Path, ...] = (Path("/var/log/auth.log"), Path("/var/log/secure"))


class WeightsConfig(_Section):
    """How much one attempt of each kind counts towards max_retry."""

    invalid_user: float = Field(1.0, ge=0, le=100)
    bad_password: float = Field(1.0, ge=0, le=100)
    bad_key: float = Field(0.0, ge=0, le=100)
    auth_failure: float = Field(1.0, ge=0, le=100)
    root_refused: float = Field(1.0, ge=0, le=100)
    user_not_allowed: float = Field(1.0, ge=0, le=100)
    max_auth_tries: float = Field(1.0, ge=0, le=100)
    preauth_disconnect: float = Field(0.5, ge=0, le=100)
    kex_failure: float = Field(0.5, ge=0, le=100)
    protocol_error: float = Field(0.5, ge=0, le=100)
    timeout: float = Field(0.5, ge=0, le=100)
    penalty: float = Field(1.0, ge=0, le=100)


class BanConfig(_Section):
    enabled: bool = True
    find_time: Annotated[Duration, above_zero(
        "failures would never add up to a ban (to turn bans off: ban.enabled = false)",
    )] = 600.0
    max_retry: float = Field(5, ge=1, le=10_000)
    ban_time: BanLength = 600.0
    escalation_factor: float = Field(2.0, ge=1.0, le=100.0)
    max_ban_time: BanLength = 7 * 86400.0
    history_time: Duration = 30 * 86400.0
    ipv4_prefix: int = Field(32, ge=8, le=32)
    ipv6_prefix: int = Field(64, ge=16, le=128)
    allow: tuple[Network, ...] = ("127.0.0.0/8", "::1/128")
    # An address that logged in successfully within this time is not banned for mere
    # failures (the admin who mistyped a password). 0 disables the protection.
    protect_logged_in: Duration = 86400.0
    # ... and only for failures against an account that logged in from there, while the
    # network's score stays below this (so a shared NAT cannot guess the admin's password
    # for ever). 0: a login protects nothing.
    protect_max_failures: float = Field(20, ge=0, le=10_000)
    max_tracked: int = Field(100_000, ge=100, le=100_000_000)
    weights: WeightsConfig = WeightsConfig()

    @model_validator(mode="after")
    def _ban_time_within_ceiling(self) -> BanConfig:
        # The policy caps every ban at max_ban_time: a longer ban_time would be cut short
        # without a word (ban_time = "2w" with the default max_ban_time gave 1w bans).
        if self.ban_time > self.max_ban_time:
            raise KeyProblem("ban_time", f"{to_text(self.ban_time)} is longer than "
                             f"ban.max_ban_time ({to_text(self.max_ban_time)}), which caps "
                             "every ban: raise max_ban_time or shorten ban_time")
        return self


class FirewallConfig(_Section):
    backend: Literal["nftables"] = "nftables"
    family: Literal["inet"] = "inet"
    table: str = Field("sshguardd", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
    # Empty: the ports sshd listens on (from `sshd -T`), falling back to 22.
    ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()
    nft: Path = Path("/usr/sbin/nft")


class SshdPolicy(_Section):
    """sshd settings that must hold. Keys are sshd keywords (any case); values as sshd
    writes them in `sshd -T`. Only the keywords listed are enforced."""

    model_config = ConfigDict(extra="allow", frozen=True)

    permitrootlogin: str = "no"
    passwordauthentication: str = "no"
    kbdinteractiveauthentication: str = "no"
    permitemptypasswords: str = "no"

    @model_validator(mode="after")
    def _no_keys_command(self) -> SshdPolicy:
        # AuthorizedKeysCommand* belong to whoever serves keys (EC2 Instance Connect, an
        # IAM or LDAP key service): enforcing them would take that way in away.
        for key in (self.model_extra or {}):
            if key.lower().startswith("authorizedkeyscommand"):
                raise KeyProblem(key, "sshguardd never writes AuthorizedKeysCommand or "
                                 "AuthorizedKeysCommandUser: they belong to the key service "
                                 "(EC2 Instance Connect, ...); leave them out of the policy")
        return self


class ShadowPolicy(_Section):
    lock_root: bool = True
    # What to write into root's password field when locking: "!" prefixes the existing
    # hash (passwd -l style; with `UsePAM no` sshd then refuses root's key logins too),
    # "*LOCK*" or "*" replace it.
    lock_form: Literal["!", "*LOCK*", "*"] = "!"
    empty_passwords: Literal["alert", "lock", "ignore"] = "alert"


class RevertWarConfig(_Section):
    max_reverts: int = Field(3, ge=1, le=1000)
    window: Duration = 600.0
    pause: Duration = 3600.0


class DriftConfig(_Section):
    enabled: bool = True
    mode: Literal["enforce", "audit"] = "enforce"
    sshd_config: Path = Path("/etc/ssh/sshd_config")
    shadow: Path = Path("/etc/shadow")
    sshd: Path = Path("/usr/sbin/sshd")
    # Empty: `systemctl restart ssh.service` or `sshd.service`, whichever exists.
    restart_command: tuple[str, ...] = ()
    debounce: Annotated[Duration, at_most(
        MAX_DEBOUNCE, "drift would stay in force that long before each repair")] = 0.1
    lockout_guard: bool = True
    # The controls judged and enforced (docs/profiles.md): "baseline" (sshd_settings'
    # defaults, today's policy), "cis", "stig", or the absolute path of a site profile.
    # Explicit sshd_settings keys win over the profile's control for the same keyword.
    profile: str = Field("baseline", pattern=r"^(baseline|cis|stig|/[^\x00]{1,4000}\.toml)$")
    # Report-only controls of the profile to enforce as well (their IDs).
    profile_enforce: tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")],
                           ...] = ()
    sshd_settings: SshdPolicy = SshdPolicy()
    shadow_policy: ShadowPolicy = ShadowPolicy()
    revert_war: RevertWarConfig = RevertWarConfig()


class MetricsConfig(_Section):
    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = Field(9822, ge=1, le=65535)


class ControlConfig(_Section):
    socket: Path = Path("/run/sshguardd/control.sock")


class AccessConfig(_Section):
    """Allow-only mode: new SSH connections only from these networks (loopback always).
    Empty (the default): off. The lockout guard refuses networks that would shut out a
    current session or a recent admin login."""

    sources: tuple[Network, ...] = ()


class UpdatesConfig(_Section):
    """The update watch: is openssh-server current, does the running sshd run it?"""

    enabled: bool = True
    package: str = Field("openssh-server", pattern=r"^[a-z0-9][a-z0-9+.-]{0,99}$")
    backend: Literal["auto", "apt", "rpm"] = "auto"
    interval: Duration = 600.0
    refresh: bool = False  # never reach the network unless asked to
    refresh_interval: Duration = 86400.0
    # Amazon Linux 2023 is pinned to its release: advisories for newer releases are seen
    # only with --releasever=latest (documented in docs/updates.md).
    dnf_releasever: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,32}$")


def _ec2_network(value: Any) -> str:
    """A network for [ec2]: as Network, and no broader than /8 (IPv4) or /32 (IPv6). No
    VPC (/16 at most) or Instance Connect prefix is near that; a typo such as 0.0.0.0/0
    would make every attacker unbannable."""
    net = ipaddress.ip_network(_network(value))
    if net.prefixlen < (8 if net.version == 4 else 32):
        raise ValueError(f"{net} is broader than any VPC or EC2 Instance Connect range "
                         "(at most /8 for IPv4, /32 for IPv6): it would never ban most of "
                         "the internet")
    return str(net)


Ec2Network = Annotated[str, BeforeValidator(_ec2_network)]


class Ec2Config(_Section):
    """[ec2] (docs/ec2.md). session_manager: a registered amazon-ssm-agent counts as a way
    in for the lockout guard. instance_connect_prefixes and vpc_cidrs are never banned
    (added to ban.allow): the EC2_INSTANCE_CONNECT prefixes AWS publishes in
    ip-ranges.json for this region, and the VPC's CIDRs (EC2 Instance Connect Endpoint
    connections come from inside the VPC). Opt-in: empty by default; no cloud API is
    called, the values come only from this file."""

    session_manager: bool = True
    instance_connect_prefixes: tuple[Ec2Network, ...] = ()
    vpc_cidrs: tuple[Ec2Network, ...] = ()


class FleetConfig(_Section):
    """[fleet]: bans shared with other hosts through Valkey/Redis streams (docs/fleet.md).
    Off by default; host empty means this machine's hostname; username empty means host."""

    enabled: bool = False
    url: str = Field("rediss://localhost:6379/0", pattern=r"^(rediss?|unix)://\S+$")
    host: str = Field("", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$|^$")
    hashtag: str = Field("fleet", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    username: str = Field("", pattern=r"^[A-Za-z0-9._-]{0,64}$")
    password_file: Path | None = None  # must be a root-owned file no one else can read
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    cluster: bool = False
    quorum: int = Field(1, ge=1, le=1000)
    max_bans_per_publisher: int = Field(600, ge=1, le=10_000_000)
    rate_window: Duration = 60.0
    quarantine_time: Duration = 3600.0
    never_ban: tuple[Network, ...] = ()
    ipv4_min_prefix: int = Field(24, ge=0, le=32)
    ipv6_min_prefix: int = Field(48, ge=0, le=128)
    retention: Duration = 3600.0
    snapshot_interval: Duration = 30.0
    status_interval: Duration = 15.0
    discovery_interval: Duration = 10.0
    outbox_max: int = Field(100_000, ge=10, le=10_000_000)
    reconnect_max: Duration = 30.0
    outage_alert_after: Duration = 30.0

    @model_validator(mode="after")
    def _tls_consistent(self) -> FleetConfig:
        # TLS files with a redis:// URL would be ignored without a word: the admin meant
        # in-transit encryption and would get a clear-text connection.
        tls = [k for k in ("tls_ca_file", "tls_cert_file", "tls_key_file")
               if getattr(self, k) is not None]
        if tls and not self.url.startswith("rediss://"):
            raise KeyProblem(tls[0], f"is set, but url {self.url!r} does not use TLS: "
                             "write rediss:// (ElastiCache's in-transit encryption) or "
                             "drop the TLS files")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            missing = "tls_key_file" if self.tls_key_file is None else "tls_cert_file"
            raise KeyProblem(missing, "a client certificate needs both tls_cert_file and "
                             "tls_key_file")
        if self.cluster and self.url.startswith("unix://"):
            raise KeyProblem("cluster", "cluster mode needs a redis:// or rediss:// url")
        return self


class Config(_Section):
    daemon: DaemonConfig = DaemonConfig()
    source: SourceConfig = SourceConfig()
    ban: BanConfig = BanConfig()
    firewall: FirewallConfig = FirewallConfig()
    drift: DriftConfig = DriftConfig()
    metrics: MetricsConfig = MetricsConfig()
    control: ControlConfig = ControlConfig()
    access: AccessConfig = AccessConfig()
    updates: UpdatesConfig = UpdatesConfig()
    fleet: FleetConfig = FleetConfig()
    ec2: Ec2Config = Ec2Config()

    def model_post_init(self, context: Any, /) -> None:
        # [ec2]'s networks join ban.allow here, once, so every reader of the never-ban
        # list (the ban policy, the fleet veto, `check --diff`, scan) has them: no reader
        # can forget. Done while the frozen model is being built, before anyone sees it.
        extra = [n for n in self.ec2.instance_connect_prefixes + self.ec2.vpc_cidrs
                 if n not in self.ban.allow]
        if extra:
            ban = self.ban.model_copy(update={"allow": self.ban.allow + tuple(extra)})
            object.__setattr__(self, "ban", ban)


class ConfigError(Exception):
    """A configuration that cannot be used. problems: (key path, reason) pairs."""

    def __init__(self, path: Path | str, problems: list[tuple[str, str]]):
        self.path = str(path)
        self.problems = problems
        super().__init__("; ".join(f"{k}: {r}" for k, r in problems))

    def lines(self) -> list[str]:
        return [f"{self.path}: {key}: {reason}" for key, reason in self.problems]


def parse(text: str, path: Path | str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("(syntax)", str(exc))]) from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            reason = err["msg"].removeprefix("Value error, ")
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, KeyProblem):
                loc.append(cause.key)
                reason = str(cause)
            if err["type"] == "extra_forbidden":
                reason = "unknown key"
            problems.append((".".join(loc) or "(top)", reason))
        raise ConfigError(path, problems) from None

