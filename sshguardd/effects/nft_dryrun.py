"""The dry-run firewall: says what it would do to the kernel and changes nothing.

`sshguardd run --dry-run` uses it so an admin can watch the bans sshguardd would apply,
on the real log, before trusting it with the firewall. It keeps the same stage/commit
contract as NftFirewall (daemon.parts.Firewall), and remembers what it would hold so
the periodic check has something honest to compare.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sshguardd.bans import nftjson
from sshguardd.contracts import Ban
from sshguardd.effects.nft_runner import Staged

log = logging.getLogger(__name__)


class DryRunFirewall:
    """Logs each change as one line starting with 'dry run: would'."""

    def __init__(self, table: str = "sshguardd", ports: Sequence[int] = (22,), *,
                 family: str = "inet", ipv4_prefix: int = 32, ipv6_prefix: int = 64):
        self.layout = nftjson.Layout(table=table, family=family, ports=tuple(ports) or (22,),
                                     ipv4_prefix=ipv4_prefix, ipv6_prefix=ipv6_prefix)
        self.held: dict[str, float] = {}   # network -> until, what the kernel would hold
        self.calls = 0      # commits that would have run nft
        self.access_dropped: dict[str, int] = {"ipv4": 0, "ipv6": 0}
        self._staged = Staged()

    @property
    def name(self) -> str:
        return f"{self.layout.family} {self.layout.table} (dry run)"

    @property
    def pending(self) -> int:
        return len(self._staged)

    def setup(self) -> None:
        log.info("dry run: would create table %s %s dropping tcp port(s) %s from banned "
                 "sources", self.layout.family, self.layout.table,
                 ", ".join(map(str, self.layout.ports)))

    def set_access(self, sources: Sequence[str]) -> bool:
        changed = nftjson.with_access(self.layout, sources)
        if changed is None:
            return False
        self.layout = changed
        log.info("dry run: would accept new ssh connections only from %s",
                 ", ".join(changed.access) if changed.access
                 else "anywhere (allow-only mode off)")
        return True

    def set_ports(self, ports: Sequence[int]) -> bool:
        changed = nftjson.with_ports(self.layout, ports)
        if changed is None:
            return False
        self.layout = changed
        return True

    def stage(self, add: Sequence[Ban] = (), remove: Sequence[str] = (), *,
              replace: bool = False) -> None:
        self._staged.stage(add, remove, replace=replace)

    def commit(self, now: float) -> None:
        st = self._staged
        for network in sorted(st.removes):
            log.info("dry run: would lift the ban of %s", network)
            self.held.pop(network, None)
        for ban in [*st.replaces.values(), *st.adds.values()]:
            left = nftjson.remaining(ban, now)
            if left:
                log.info("dry run: would ban %s for %ds (%s)", ban.network, left, ban.reason)
                self.held[ban.network] = ban.until
        if len(st):
            self.calls += 1
        st.clear()

    def restore(self, bans: Sequence[Ban], now: float) -> None:
        self._staged.clear()
        self.held = {b.network: b.until for b in bans if b.until > now}
        log.info("dry run: would load %d active bans into %s %s", len(self.held),
                 self.layout.family, self.layout.table)

    def check(self, sample: Sequence[str]) -> str | None:
        missing = [n for n in sample if n not in self.held]
        return f"{missing[0]} is missing (dry run)" if missing else None
