"""The production storage stanza of deploy/dagster.yaml against a real PostgreSQL server.

Uses `HEALTHGPT_TEST_PG_URL` (postgresql://user:password@127.0.0.1:5432/db) when set;
otherwise starts a throwaway server with the PostgreSQL binaries (`initdb`, `pg_ctl`, on
PATH or in /usr/lib/postgresql/*/bin) in a temporary directory on a free loopback port.
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest
import yaml

from pipelines.resources import DataLocations
from pipelines.sources import _ingest_factory

psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed")
pytest.importorskip("dagster_postgres", reason="dagster-postgres is not installed")
pytestmark = pytest.mark.filterwarnings(
    "ignore:Found version mismatch between `dagster-shared`:UserWarning"
)

DEPLOY_YAML = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"


def _pg_bin_dir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _throwaway_server() -> Iterator[dict[str, str]]:
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="healthgpt-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            pytest.skip("running as root and there is no `postgres` user to run the server")
        os.chown(base, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    password = "test-password"
    (base / "pw").write_text(password + "\n")
    if as_user:
        os.chown(base / "pw", account.pw_uid, account.pw_gid)
    data, port = base / "data", _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=60)

    try:
        run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "dagster",
            f"--pwfile={base / 'pw'}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        options = f"-p {port} -h 127.0.0.1 -k {base} -F"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-o", options,
            "-w", "-t", "30", "start")  # fmt: skip
    except subprocess.CalledProcessError as error:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {error.stderr.decode(errors='replace')}")
    try:
        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="dagster", password=password, dbname="postgres"
        )
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE dagster_test")
        connection.close()
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_USERNAME": "dagster",
            "DAGSTER_PG_PASSWORD": password,
            "DAGSTER_PG_DB": "dagster_test",
        }
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_env() -> Iterator[dict[str, str]]:
    url = os.environ.get("HEALTHGPT_TEST_PG_URL")
    if not url:
        yield from _throwaway_server()
        return
    parsed = urlparse(url)
    yield {
        "DAGSTER_PG_HOST": parsed.hostname or "127.0.0.1",
        "DAGSTER_PG_PORT": str(parsed.port or 5432),
        "DAGSTER_PG_USERNAME": parsed.username or "postgres",
        "DAGSTER_PG_PASSWORD": parsed.password or "",
        "DAGSTER_PG_DB": parsed.path.lstrip("/") or "postgres",
    }


@pytest.fixture
def pg_instance(pg_env, tmp_path, monkeypatch) -> Iterator[dg.DagsterInstance]:
    """An instance with exactly the storage section of deploy/dagster.yaml."""
    for key, value in pg_env.items():
        monkeypatch.setenv(key, value)
    storage = yaml.safe_load(DEPLOY_YAML.read_text())["storage"]
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = {"storage": storage, "telemetry": {"enabled": False}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


def _query(env: dict[str, str], sql: str, *params: str) -> list[tuple]:
    connection = psycopg2.connect(
        host=env["DAGSTER_PG_HOST"],
        port=int(env["DAGSTER_PG_PORT"]),
        user=env["DAGSTER_PG_USERNAME"],
        password=env["DAGSTER_PG_PASSWORD"],
        dbname=env["DAGSTER_PG_DB"],
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        connection.close()


def test_instance_uses_postgres_for_runs_events_and_schedules(pg_instance):
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(pg_instance.schedule_storage, PostgresScheduleStorage)


def test_ingestion_run_is_stored_in_postgres(pg_instance, pg_env, tmp_path, toy_source):
    (tmp_path / "sources" / "toy").mkdir(parents=True)
    locations = DataLocations(data_dir=str(tmp_path / "out"), sources_dir=str(tmp_path / "sources"))
    result = dg.materialize(
        [_ingest_factory("toy")], resources={"locations": locations}, instance=pg_instance
    )
    assert result.success
    rows = _query(pg_env, "SELECT status FROM runs WHERE run_id = %s", result.run_id)
    assert rows == [("SUCCESS",)]
    events = _query(
        pg_env,
        "SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
        result.run_id,
        "ASSET_MATERIALIZATION",
    )
    assert len(events) == 1 and "toy" in events[0][0]
    # And Dagster reads it back through the same storage.
    record = pg_instance.get_latest_materialization_event(dg.AssetKey(["ingested", "toy"]))
    assert record.asset_materialization.metadata["records"].value == 10
