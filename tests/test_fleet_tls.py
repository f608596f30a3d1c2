"""Fleet mode over TLS (ElastiCache's in-transit encryption; a self-hosted Valkey/Redis
with tls-port): a real redis-server with a TLS port, certificates made here with openssl
from a throw-away CA, and the transport built from a [fleet] config as the daemon builds
it. Also the config's TLS keys, refused by key path when they cannot work."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_helpers import RedisServer, password
from sshguardd import config
from sshguardd.contracts import FleetEntry
from sshguardd.effects.fleet_transport import FleetUnavailable, from_config

PORT = 6393


def openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, f"openssl {args}: {r.stderr}"


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1",
            "-subj", f"/CN={name}", cwd=d)


def make_cert(d: Path, name: str, ca: str, san: str) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName = {san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile",
            f"{name}.ext", cwd=d)
    (d / f"{name}.key").chmod(0o600)


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    pki = tmp_path / "pki"
    pki.mkdir()
    make_ca(pki, "ca")
    make_ca(pki, "other-ca")   # a CA the server's certificate does not chain to
    make_cert(pki, "server", "ca", "IP:127.0.0.1")
    make_cert(pki, "client", "ca", "DNS:h1")
    for h in ("h1", "h2"):
        pw = tmp_path / f"{h}.password"
        pw.write_text(password(h) + "\n")
        pw.chmod(0o600)
    # Plain connections only on the Unix socket (the test's admin); hosts use TLS with a
    # client certificate, as a self-hosted engine with tls-auth-clients yes demands.
    server = RedisServer(tmp_path, ["h1", "h2"], extra=[
        "--bind", "127.0.0.1", "--tls-port", str(PORT),
        "--tls-cert-file", str(pki / "server.crt"), "--tls-key-file", str(pki / "server.key"),
        "--tls-ca-cert-file", str(pki / "ca.crt"), "--tls-auth-clients", "yes"]).start()
    try:
        yield server, tmp_path
    finally:
        server.close()


def fleet_config(tmp: Path, host: str, ca: str = "ca", client: bool = True) -> config.Config:
    pki = tmp / "pki"
    lines = ["[fleet]", "enabled = true", f'url = "rediss://127.0.0.1:{PORT}/0"',
             f'host = "{host}"', f'password_file = "{tmp / (host + ".password")}"',
             f'tls_ca_file = "{pki / (ca + ".crt")}"']
    if client:
        lines += [f'tls_cert_file = "{pki / "client.crt"}"',
                  f'tls_key_file = "{pki / "client.key"}"']
    return config.parse("\n".join(lines) + "\n")


def test_bans_travel_over_tls(tls: tuple[RedisServer, Path]) -> None:
    _, tmp = tls
    h1 = from_config(fleet_config(tmp, "h1").fleet)
    h2 = from_config(fleet_config(tmp, "h2").fleet)
    try:
        h1.ping()
        entry = FleetEntry("ban", "203.0.113.8/32", time.time() + 600, "bad_password", 5.0,
                           "h1", 1)
        assert h1.publish([(f"{int(time.time() * 1000)}-1", entry)], 0) == 1
        reads = h2.read({"h1": "0-0"}, block=None)
        assert [e for r in reads for _, e in r.entries] == [entry]
        info = h2.client.connection_pool.get_connection()
        try:
            assert info.__class__.__name__ == "SSLConnection"   # not a clear-text fallback
        finally:
            h2.client.connection_pool.release(info)
    finally:
        h1.close()
        h2.close()


def test_a_server_certificate_from_another_ca_is_refused(
        tls: tuple[RedisServer, Path]) -> None:
    _, tmp = tls
    t = from_config(fleet_config(tmp, "h1", ca="other-ca").fleet)
    try:
        with pytest.raises(FleetUnavailable, match="certificate verify failed"):
            t.ping()
    finally:
        t.close()


def test_the_server_refuses_a_host_without_a_client_certificate(
        tls: tuple[RedisServer, Path]) -> None:
    _, tmp = tls
    t = from_config(fleet_config(tmp, "h1", client=False).fleet)
    try:
        with pytest.raises(FleetUnavailable):
            t.ping()
    finally:
        t.close()


def test_a_readable_client_key_is_refused(tls: tuple[RedisServer, Path]) -> None:
    _, tmp = tls
    (tmp / "pki" / "client.key").chmod(0o644)
    with pytest.raises(FleetUnavailable, match=r"fleet\.tls_key_file .* must be owned by root"):
        from_config(fleet_config(tmp, "h1").fleet)


@pytest.mark.parametrize(("text", "key"), [
    ('url = "redis://10.0.0.5:6379/0"\ntls_ca_file = "/etc/ssl/ca.pem"', "fleet.tls_ca_file"),
    ('tls_cert_file = "/etc/sshguardd/client.crt"', "fleet.tls_key_file"),
    ('tls_key_file = "/etc/sshguardd/client.key"', "fleet.tls_cert_file"),
    ('url = "unix:///run/redis.sock"\ncluster = true', "fleet.cluster"),
    ('url = "http://cache:6379"', "fleet.url"),
    ('tls_ca_file = 5', "fleet.tls_ca_file"),
])
def test_tls_settings_that_cannot_work_are_refused_by_key(text: str, key: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.parse("[fleet]\nenabled = true\n" + text + "\n")
    assert [k for k, _ in err.value.problems] == [key], err.value.problems
