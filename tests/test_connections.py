"""One TLS policy and one search_path for every connection the gate opens (issue 20 items 3 and 8): pg_dump,
pg_restore and psql verify the server as the gate's own sessions do, and every gate session reads the catalogs
and calls the built-ins it means, whatever a schema on the target's search_path holds."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from migration_gate import backup
from migration_gate.checks import data
from migration_gate.config import load_config
from migration_gate.db import catalog
from migration_gate.db import connection as db
from migration_gate.db.embedded import EmbeddedPostgres, _run_as

GATE = load_config()


# -- the factory and the client tools' environment -------------------------------------------------------------

def test_the_factory_pins_search_path_after_the_dsns_own_options():
    assert db.pinned_options(None) == db.PIN
    assert db.pinned_options("-c lock_timeout=5s") == f"-c lock_timeout=5s {db.PIN}"
    assert db.pinned_options(f"-c lock_timeout=5s {db.PIN}") == f"-c lock_timeout=5s {db.PIN}"  # not twice


def test_a_client_tool_gets_the_connection_settings_and_no_password_on_its_command_line(monkeypatch):
    for name, value in {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/ca.crt", "PGSERVICEFILE": "/svc",
                        "PGPASSFILE": "/pass", "PGDATA": "/elsewhere"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PGOPTIONS", raising=False)
    plain, env = db.client_env("host=db.example.invalid dbname=app user=gate password=s3cret sslmode=require")
    assert "s3cret" not in plain and env["PGPASSWORD"] == "s3cret"
    assert "sslmode=require" in plain  # the DSN's own parameters stay in the DSN
    assert {k: env[k] for k in ("PGSSLMODE", "PGSSLROOTCERT", "PGSERVICEFILE", "PGPASSFILE")} == {
        "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/ca.crt", "PGSERVICEFILE": "/svc", "PGPASSFILE": "/pass"}
    assert "PGDATA" not in env  # not a connection setting
    assert env["PGOPTIONS"] == db.PIN
    plain, env = db.client_env("host=h dbname=app options='-c lock_timeout=5s'")
    assert psycopg.conninfo.conninfo_to_dict(plain)["options"] == f"-c lock_timeout=5s {db.PIN}"


# -- item 8: search_path ---------------------------------------------------------------------------------------

SHADOW = [  # an aggregate in public that beats pg_catalog.array_agg(anynonarray) for integers: it keeps nothing
    "CREATE FUNCTION public.keep_nothing(integer[], integer) RETURNS integer[] LANGUAGE sql IMMUTABLE AS 'SELECT $1'",
    "CREATE AGGREGATE public.array_agg(integer) (sfunc = public.keep_nothing, stype = integer[], initcond = '{}')",
]


def test_a_function_in_public_cannot_stand_in_for_a_built_in_in_a_gate_session(legacy_db):
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("INSERT INTO therapist_profiles (user_id, name) SELECT user_id, name FROM therapist_profiles "
                     "WHERE user_id = 1")
        for statement in SHADOW:
            conn.execute(statement)
        shadowed = conn.execute("SELECT array_agg(x) FROM (VALUES (1), (2)) AS v(x)").fetchone()[0]
        assert shadowed == [], "the shadow does not shadow under the target's own search_path"
    with db.connect(legacy_db, autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog, pg_temp"
        result = data.duplicates(conn, GATE.unique_keys)
    assert not result.ok
    assert "therapist_profiles(user_id): 1 duplicated keys over 2 rows" in "\n".join(result.problems)


def test_reading_the_catalog_inside_the_users_transaction_leaves_its_search_path(legacy_db):
    """A rollback file runs in one transaction after deploytables read the catalog: its unqualified names must
    still find the app's tables (the catalog's pinned search_path ends with the read)."""
    with psycopg.connect(legacy_db) as conn, conn.transaction():
        catalog.inspect(conn, ["public"])
        assert conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'
        assert conn.execute("SELECT count(*) FROM therapist_profiles").fetchone()[0] > 0


# -- item 3: the dump refuses a server the gate's sessions refuse ------------------------------------------------

def _certificate(name: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """Self-signed, for 127.0.0.1 and localhost (verify-full checks the host against it)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[tuple[EmbeddedPostgres, Path]]:
    """A cluster serving TLS with a self-signed certificate; the folder also holds right-ca.crt (that
    certificate) and wrong-ca.crt (another CA's)."""
    folder = Path(tempfile.mkdtemp(prefix="gate-tls-"))
    folder.chmod(0o755)  # the server's account (not root) reads its certificate and key here
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate("gate-test-server", key).public_bytes(serialization.Encoding.PEM)
        (folder / "server.crt").write_bytes(cert)
        (folder / "right-ca.crt").write_bytes(cert)
        (folder / "wrong-ca.crt").write_bytes(_certificate("someone-else", ec.generate_private_key(ec.SECP256R1()))
                                              .public_bytes(serialization.Encoding.PEM))
        secret = folder / "server.key"
        secret.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        secret.chmod(0o600)
        account = _run_as()
        if account is not None:
            os.chown(secret, account.pw_uid, account.pw_gid)
        with EmbeddedPostgres(settings={"ssl": "on", "ssl_cert_file": str(folder / "server.crt"),
                                        "ssl_key_file": str(secret)}) as cluster:
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE app")
            with psycopg.connect(cluster.dsn("app"), autocommit=True) as conn:
                conn.execute("CREATE TABLE public.notes (id integer PRIMARY KEY, body text)")
                conn.execute("INSERT INTO public.notes VALUES (1, 'one'), (2, 'two')")
            yield cluster, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.cluster
def test_with_a_wrong_ca_the_dump_and_the_restore_refuse_as_the_gate_does(tls_cluster, tmp_path, monkeypatch):
    cluster, folder = tls_cluster
    dsn = cluster.dsn("app")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGSSLROOTCERT", str(folder / "right-ca.crt"))
    record = backup.take_backup(dsn, tmp_path)  # the right CA: verified, and the dump goes through
    with db.connect(dsn) as conn:
        assert conn.info.pgconn.ssl_in_use

    monkeypatch.setenv("PGSSLROOTCERT", str(folder / "wrong-ca.crt"))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        db.connect(dsn).close()
    with pytest.raises(backup.BackupError, match="unreachable: .*certificate verify failed"):
        backup.take_backup(dsn, tmp_path / "again")
    plain, env = backup.split_password(dsn)  # pg_dump as the backup starts it
    dumped = subprocess.run([cluster.binaries.tool("pg_dump"), "--format=custom", f"--dbname={plain}"],
                            env=env, capture_output=True, timeout=60)
    assert dumped.returncode != 0 and b"certificate verify failed" in dumped.stderr, "pg_dump streamed unverified"
    # psql refuses the server before it reads a line; pg_restore's stream into it breaks: one line naming the cause
    with pytest.raises(backup.BackupError, match=r"restoring the backup failed \(nothing was changed\): psql: "
                                                 r".*certificate verify failed"):
        backup.restore_in_place(Path(record.path), dsn)
