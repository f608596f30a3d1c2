"""The nftables effect: applies the JSON built by `sshguardd.bans.nftjson` with `nft -j -f -`.

One nft process per batch (never one per ban): a transaction of 100k elements costs about
as much as a few dozen single-element nft processes. Every failure raises FirewallError
carrying the exact argv, JSON payload and nft's stderr.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from sshguardd.bans import access, nftjson
from sshguardd.contracts import Ban

log = logging.getLogger(__name__)

# Elements per nft transaction. One nft process costs ~5 ms, so 20k-element transactions
# lose little to process start-up, keep nft's memory small (it holds the parsed JSON, a
# few KB per element), and let the next batch be built while nft parses this one.
CHUNK = 20_000
TIMEOUT = 120.0  # seconds for one nft process; a hung nft must not hang the daemon


class FirewallError(Exception):
    """An nft call failed. argv, payload (the JSON text sent, or "") and stderr are kept
    whole; str() quotes all three (a very long payload is shortened in the message only)."""

    def __init__(self, argv: Sequence[str], payload: str, stderr: str):
        self.argv = list(argv)
        self.payload = payload
        self.stderr = stderr
        shown = payload if len(payload) <= 4000 else payload[:4000] + f"... ({len(payload)} chars)"
        super().__init__(f"nft failed: argv={self.argv!r} stderr={stderr.strip()!r} "
                         f"payload={shown}")


class Staged:
    """The add/commit buffer of a firewall backend: bans decided but not yet in the
    kernel, and networks to lift. The daemon stages a batch's bans and commits once; what
    a failed commit did not apply stays here for the next commit (its retry)."""

    def __init__(self) -> None:
        self.adds: dict[str, Ban] = {}
        self.replaces: dict[str, Ban] = {}
        self.removes: set[str] = set()

    def stage(self, add: Sequence[Ban] = (), remove: Sequence[str] = (), *,
              replace: bool = False) -> None:
        for network in remove:
            self.adds.pop(network, None)
            self.replaces.pop(network, None)
            self.removes.add(network)
        for ban in add:
            self.removes.discard(ban.network)
            if replace or ban.network in self.replaces:
                self.adds.pop(ban.network, None)
                self.replaces[ban.network] = ban
            else:
                self.adds[ban.network] = ban

    def clear(self) -> None:
        self.adds.clear()
        self.replaces.clear()
        self.removes.clear()

    def __len__(self) -> int:
        return len(self.adds) + len(self.replaces) + len(self.removes)


class NftFirewall:
    """sshguardd's table in the kernel.

    nft is the nft binary or an argv prefix that runs it (tests pass
    ["nsenter", "-t", PID, "-n", "/usr/sbin/nft"] to work in a private net namespace).
    The daemon uses it through daemon.parts.Firewall (stage/commit/restore/check/setup/
    set_ports); add/replace/remove/exists/expires are the immediate operations beneath.
    """

    def __init__(self, table: str = "sshguardd", ports: Sequence[int] = (22,),
                 nft: str | Path | Sequence[str] = "/usr/sbin/nft", *,
                 ipv4_prefix: int = 32, ipv6_prefix: int = 64, family: str = "inet",
                 chunk: int = CHUNK, timeout: float = TIMEOUT):
        self.layout = nftjson.Layout(table=table, family=family, ports=tuple(ports) or (22,),
                                 ipv4_prefix=ipv4_prefix, ipv6_prefix=ipv6_prefix)
        self.prefix = [str(nft)] if isinstance(nft, (str, Path)) else [str(a) for a in nft]
        self.chunk = chunk
        self.timeout = timeout
        self.calls = 0       # nft processes run
        self.failures = 0    # of which failed
        # packets the allow-only rules dropped, by family, as of the last check()
        self.access_dropped: dict[str, int] = {"ipv4": 0, "ipv6": 0}
        self._staged = Staged()

    @property
    def name(self) -> str:
        return f"{self.layout.family} {self.layout.table}"

    @property
    def pending(self) -> int:
        return len(self._staged)

    # -- running nft ---------------------------------------------------------------------
    def _start(self, args: Sequence[str],
               payload: str) -> tuple[subprocess.Popen[bytes], list[str], str]:
        argv = [*self.prefix, *args]
        self.calls += 1
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as exc:
            self.failures += 1
            raise FirewallError(argv, payload, str(exc)) from exc
        if proc.stdin is None:  # cannot happen with stdin=PIPE; never write to nowhere
            raise FirewallError(argv, payload, "no pipe to nft's stdin")
        try:
            proc.stdin.write(payload.encode())
        except BrokenPipeError:
            pass  # nft exited early; its stderr says why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.stdin = None  # so communicate() does not flush the closed pipe
        return proc, argv, payload

    def _finish(self, started: tuple[subprocess.Popen[bytes], list[str], str]) -> str:
        proc, argv, payload = started
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            self.failures += 1
            raise FirewallError(argv, payload, f"no answer within {self.timeout:g}s") from exc
        if proc.returncode != 0:
            self.failures += 1
            raise FirewallError(argv, payload, err.decode(errors="replace"))
        return out.decode(errors="replace")

    def _run(self, args: Sequence[str], payload: str = "") -> str:
        return self._finish(self._start(args, payload))

    def apply(self, payload: nftjson.JSON) -> None:
        """Run one JSON transaction (`nft -j -f -`)."""
        if payload["nftables"]:
            self._run(["-j", "-f", "-"], _dumps(payload))

    def _apply_payloads(self, payloads: Iterable[str]) -> None:
        """One transaction per payload, in order; payload n+1 is built while nft works on
        payload n, so a large restore costs about max(build, nft) rather than the sum."""
        running = None
        try:
            for payload in payloads:
                if running is not None:
                    done, running = running, None
                    self._finish(done)
                running = self._start(["-j", "-f", "-"], payload)
        finally:
            if running is not None:
                self._finish(running)

    # -- the seam ----------------------------------------------------------------------
    def setup(self) -> None:
        """Create or repair the table, sets and drop rules idempotently. Existing elements
        survive. If our objects were changed incompatibly (say a set's type), the table is
        rebuilt from scratch; call restore() afterwards in any case."""
        try:
            self.apply(nftjson.setup(self.layout))
        except FirewallError as exc:
            try:
                ours = self.exists()
            except FirewallError:
                ours = False
            if not ours:
                raise  # nothing of ours to repair: nft itself or the kernel refused
            log.warning("nft setup of table %s %s failed, rebuilding the table: %s",
                        self.layout.family, self.layout.table, exc.stderr.strip())
            self.apply(nftjson.recreate(self.layout))

    def set_access(self, sources: Sequence[str]) -> bool:
        """Allow-only mode's sources from the next setup() on (() = off); True if they
        differ from before."""
        changed = nftjson.with_access(self.layout, sources)
        if changed is None:
            return False
        self.layout = changed
        return True

    def set_ports(self, ports: Sequence[int]) -> bool:
        """Protect `ports` from the next setup() on; True if they differ from before."""
        changed = nftjson.with_ports(self.layout, ports)
        if changed is None:
            return False
        self.layout = changed
        return True

    def stage(self, add: Sequence[Ban] = (), remove: Sequence[str] = (), *,
              replace: bool = False) -> None:
        self._staged.stage(add, remove, replace=replace)

    def commit(self, now: float) -> None:
        """Apply what is staged: lifts and replacements in one transaction, then the adds
        (one transaction per CHUNK). A failed step keeps its changes staged and raises."""
        st = self._staged
        if st.removes or st.replaces:
            live = [b for b in st.replaces.values() if b.until > now]
            cmds = nftjson.delete_elements(self.layout, sorted(st.removes)) + \
                nftjson.replace_elements(self.layout, live, now)
            if cmds:
                self.apply(nftjson.batch(cmds))
            st.removes.clear()
            st.replaces.clear()
        if st.adds:
            self.add([b for b in st.adds.values() if b.until > now], now)
            st.adds.clear()

    def check(self, sample: Sequence[str]) -> str | None:
        """None when our table, sets and drop rules are as setup() makes them and every
        network of `sample` (a few active bans from the store) is in its set; else what
        is wrong. Two small nft calls: the table without its elements (`-t`), and one
        `get element` per sampled network; the sets are never listed (a million elements
        take ~50 s)."""
        try:
            out = self._run(["-j", "-t", "list", "table", self.layout.family,
                             self.layout.table])
        except FirewallError as exc:
            if "No such file or directory" in exc.stderr:
                self.failures -= 1
                return "the table is gone"
            raise
        listing = json.loads(out)
        self.access_dropped = access.dropped(listing)
        problem = nftjson.check_listing(self.layout, listing)
        if problem is not None or not sample:
            return problem
        for network in sample:
            try:
                net = nftjson.parse_network(network)
            except ValueError:
                continue
            args = ["get", "element", self.layout.family, self.layout.table,
                    self.layout.set_for(net), "{ " + nftjson.element_text(net, self.layout) + " }"]
            try:
                self._run(args)
            except FirewallError as exc:
                if "No such file or directory" in exc.stderr:
                    self.failures -= 1
                    return f"{network} is missing from set {self.layout.set_for(net)}"
                raise
        return None

    def add(self, bans: Sequence[Ban], now: float) -> None:
        """Add bans with kernel timeouts = remaining time at `now` (expired ones skipped)."""
        self._apply_payloads(nftjson.add_payloads(self.layout, bans, now, self.chunk))

    def replace(self, bans: Sequence[Ban], now: float) -> None:
        """Add bans that may already be in the kernel, setting their timeouts to the new
        remaining time (e.g. a manual ban extending a live one). Meant for small batches."""
        self.apply(nftjson.batch(nftjson.replace_elements(self.layout, bans, now)))

    def remove(self, networks: Sequence[str]) -> None:
        """Lift bans now; networks not (or no longer) in the kernel are not an error."""
        if networks:
            for i in range(0, len(networks), self.chunk):
                self.apply(nftjson.batch(nftjson.delete_elements(
                    self.layout, networks[i:i + self.chunk])))

    def restore(self, bans: Sequence[Ban], now: float) -> None:
        """Make the kernel's sets hold exactly the active bans (from the store), each with
        its remaining time. The flush and the first chunk are one transaction, so there is
        no moment without bans when they fit in one chunk. The sets are never read back:
        listing 1M elements as JSON takes ~50 s. Whatever was staged is settled by it."""
        self._staged.clear()
        invalid: list[Ban] = []
        self._apply_payloads(nftjson.add_payloads(self.layout, bans, now, self.chunk,
                                                  first=nftjson.flush_sets(self.layout),
                                                  invalid=invalid))
        for ban in invalid:
            log.warning("not restoring ban of %r: not an IP network", ban.network)

    def exists(self) -> bool:
        """Is our table in the kernel? (Cheap: lists table names only, not elements.)"""
        out = self._run(["-j", "list", "tables", self.layout.family])
        for item in json.loads(out).get("nftables", []):
            table = item.get("table")
            if table and table.get("name") == self.layout.table:
                return True
        return False

    def contains(self, network: str) -> bool:
        """Is this network an element of its set? (for tests and `bans`)"""
        return self.expires(network) is not None

    def expires(self, network: str) -> float | None:
        """Seconds until the kernel drops this exact element, or None if it is not in its
        set. For tests and diagnostics: an interval-set lookup lists that (small) set."""
        net = nftjson.parse_network(network)
        set_name = self.layout.set_for(net)
        if set_name.startswith("net"):
            # nft 1.0.6 `get element` on an interval set prints no timeout and also answers
            # for a covering prefix, so read the set (only manual wide bans live there).
            out = self._run(["-j", "list", "set", self.layout.family, self.layout.table,
                             set_name])
            for item in json.loads(out).get("nftables", []):
                for elem in (item.get("set") or {}).get("elem", []):
                    body = elem.get("elem", {}) if isinstance(elem, dict) else {}
                    prefix = (body.get("val") or {}).get("prefix") if isinstance(
                        body.get("val"), dict) else None
                    if prefix and prefix["addr"] == str(net.network_address) \
                            and prefix["len"] == net.prefixlen:
                        return float(body.get("expires", body.get("timeout", 0)))
            return None
        args = ["get", "element", self.layout.family, self.layout.table, set_name,
                "{ " + str(net.network_address) + " }"]
        try:
            out = self._run(args)
        except FirewallError as exc:
            if "No such file or directory" in exc.stderr:
                self.failures -= 1  # "not there" is an answer, not a failure
                return None
            raise
        # nft 1.0.6 prints `get element` as text even with -j: "... expires 9m59s996ms".
        m = re.search(r"expires ([0-9hmsd]+)", out)
        return _parse_nft_duration(m.group(1)) if m else None

    def delete_table(self) -> None:
        self.apply(nftjson.delete_table(self.layout))


def _dumps(payload: nftjson.JSON) -> str:
    return json.dumps(payload, separators=(",", ":"))


_NFT_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _parse_nft_duration(text: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|d|h|m|s)", text):
        total += int(number) * _NFT_UNITS[unit]
    return total
