"""The UI as a person uses it: the webserver and the daemon on the project's code location,
an ingestion launched the way the UI's "Materialize" button does it (GraphQL), and a
screenshot of the asset graph taken by headless Chromium.

Set `HEALTHGPT_E2E_SCREENSHOTS=<dir>` to keep the screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "pipelines.definitions"
CANDIDATE_SOURCES = ("vqa_rad", "slake", "pathvqa")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sample_source(sources_dir: Path) -> str:
    """Build the first bundled sample source whose builder and reader exist."""
    try:
        from healthgpt.data.samples import build_sample_source
        from healthgpt.data.sources import reader_class
    except ImportError as error:
        pytest.skip(f"no sample sources yet: {error}")
    for name in CANDIDATE_SOURCES:
        try:
            reader_class(name)
            build_sample_source(name, sources_dir)
        except (ImportError, KeyError):
            continue
        return name
    pytest.skip(f"none of the sample sources {CANDIDATE_SOURCES} is available yet")


class Dagster:
    """`dagster-webserver` plus `dagster-daemon`, in their own process groups."""

    def __init__(self, home: Path, env: dict[str, str], logs: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = logs
        common = ["-m", LOCATION]
        self.processes = [
            self._start("webserver", [str(BIN / "dagster-webserver"), *common,
                                      "-h", "127.0.0.1", "-p", str(self.port)], env),
            self._start("daemon", [str(BIN / "dagster-daemon"), "run", *common], env),
        ]  # fmt: skip

    def _start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            process.stdout and process.stdout.close()

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
        assert "errors" not in payload, payload
        return payload["data"]

    def wait_until_loaded(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        query = """{ workspaceOrError { ... on Workspace { locationEntries {
            name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
        } } } }"""
        while time.monotonic() < deadline:
            for process in self.processes:
                assert process.poll() is None, f"a Dagster process exited:\n{self.log_tail()}"
            try:
                entries = self.graphql(query)["workspaceOrError"]["locationEntries"]
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
                continue
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                location = entries[0]["locationOrLoadError"]
                assert location["__typename"] == "RepositoryLocation", location
                return
            time.sleep(0.5)
        pytest.fail(f"the code location did not load in {timeout}s:\n{self.log_tail()}")


LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""

LATEST = """
query Latest($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 1) { runId } }
  }
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks {
      checks { name executionForLatestMaterialization { status } }
    } } }
  }
}
"""

RUN_STATUS = """
query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }
"""


@pytest.fixture
def dagster_ui(tmp_path) -> Iterator[tuple[Dagster, str, Path]]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    sources_dir, data_dir = tmp_path / "sources", tmp_path / "data"
    source = _sample_source(sources_dir)
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The project's own instance configuration, with storage in this temporary home, and
    # without the first-visit "join the community" dialog that would cover the screenshot.
    config = yaml.safe_load((REPO / "dagster_home" / "dagster.yaml").read_text())
    config.setdefault("nux", {"enabled": False})
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    # Create the SQLite storage once here: the webserver and the daemon starting together
    # on a fresh home would both try to create it.
    dg.DagsterInstance.from_config(str(home)).dispose()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "HEALTHGPT_DATA_DIR": str(data_dir),
        "HEALTHGPT_SOURCES_DIR": str(sources_dir),
        "PYTHONWARNINGS": "ignore",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    dagster = Dagster(home, env, logs)
    try:
        dagster.wait_until_loaded()
        yield dagster, source, data_dir
    finally:
        dagster.stop()


def _screenshot(url: str, png: Path, profile: Path) -> None:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
        "--window-size=1600,1000", "--virtual-time-budget=15000", url,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=90)


def test_materialize_from_the_ui_and_see_the_asset_graph(dagster_ui, tmp_path):
    dagster, source, data_dir = dagster_ui
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": ["ingested", source]}],
        },
        "mode": "default",
        "executionMetadata": {"tags": []},
        "runConfigData": {},
    }
    launched = dagster.graphql(LAUNCH, {"executionParams": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline, status = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        status = dagster.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        time.sleep(1)
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{dagster.log_tail()}"
    assert (data_dir / "ingested" / source / "_manifest.json").is_file()

    latest = dagster.graphql(LATEST, {"path": ["ingested", source]})
    assert latest["assetOrError"]["assetMaterializations"][0]["runId"] == run_id
    checks = latest["assetNodeOrError"]["assetChecksOrError"]["checks"]
    assert len(checks) == 4
    assert {c["executionForLatestMaterialization"]["status"] for c in checks} == {"SUCCEEDED"}

    shots = Path(os.environ.get("HEALTHGPT_E2E_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    pages = {
        # The asset's lineage: its source upstream, the ingestion "Materialized", checks passed.
        "asset_lineage.png": f"/assets/ingested/{source}?view=lineage",
        # The global asset graph as the Lineage menu opens it.
        "asset_graph.png": "/asset-groups",
    }
    for name, page in pages.items():
        png = shots / name
        png.unlink(missing_ok=True)
        _screenshot(f"{dagster.url}{page}", png, tmp_path / f"chromium-{png.stem}")
        assert png.is_file() and png.stat().st_size > 20_000, f"{name} missing or nearly empty"
        with Image.open(png) as image:
            assert image.size == (1600, 1000)
            colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is None or len(colors) > 100, f"{name} rendered as a flat image"
