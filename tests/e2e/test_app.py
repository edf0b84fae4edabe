"""The web app as a researcher uses it: `healthgpt app` on a tiny checkpoint, driven by headless
Chromium over the DevTools protocol: upload an image and ask (the answer shows on the page),
run a generation task (the image shows on the page).

Set `HEALTHGPT_E2E_SCREENSHOTS=<dir>` to keep a screenshot of the page.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STARTUP = re.compile(r"start-up (?P<seconds>[\d.]+) s, peak memory (?P<mib>\d+) MiB")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(predicate, timeout: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    pytest.fail(f"{what} within {timeout}s\n{tail}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


class DevTools:
    """A minimal Chrome DevTools protocol client on one page target."""

    def __init__(self, url: str) -> None:
        import websocket

        self.socket = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == message_id:
                assert "error" not in reply, reply
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def set_file(self, selector: str, path: Path) -> None:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`healthgpt app` on a tiny-preset checkpoint (as the evaluation tests save one)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from healthgpt.model import load_model, save_trainable

    checkpoint = tmp_path / "checkpoint"
    save_trainable(
        load_model("tiny"), checkpoint / "model.safetensors", metadata={"preset": "tiny"}
    )
    port = _free_port()
    log = tmp_path / "app.log"
    command = [
        sys.executable, "-m", "healthgpt.cli", "app", "--checkpoint", str(checkpoint),
        "--host", "127.0.0.1", "--port", str(port), "--max-new-tokens", "8",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        _wait(ready, 180, "the app did not answer", log)
        yield url, log
    finally:
        _stop(process)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1200,1400",
        "about:blank",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        active = profile / "DevToolsActivePort"
        port = _wait(lambda: active.is_file() and active.read_text().split("\n")[0], 60, "no port")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            pages = [t for t in json.load(response) if t["type"] == "page"]
        devtools = DevTools(pages[0]["webSocketDebuggerUrl"])
        try:
            yield devtools
        finally:
            devtools.close()
    finally:
        _stop(process)


def _scan(path: Path) -> Path:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path


def test_ask_and_generate_in_the_browser(app, browser, tmp_path):
    url, log = app
    startup = STARTUP.search(log.read_text(errors="replace"))
    assert startup, log.read_text(errors="replace")[-2000:]
    assert float(startup["seconds"]) > 0 and int(startup["mib"]) > 0

    browser.call("Page.enable")
    browser.call("Page.navigate", url=url)
    _wait(lambda: browser.evaluate("document.readyState") == "complete", 30, "page not loaded")
    assert "not for clinical use" in browser.evaluate("document.body.innerText")

    scan = _scan(tmp_path / "scan.png")
    browser.set_file("#ask-image", scan)
    browser.evaluate("document.getElementById('ask-question').value = 'Is this a CT?'")
    browser.evaluate("document.getElementById('ask-submit').click()")
    done = "document.getElementById('ask-answer').dataset.done"
    _wait(lambda: browser.evaluate(done), 60, "no answer on the page", log)
    answer = browser.evaluate("document.getElementById('ask-answer').textContent")
    assert answer.startswith("Answer: ") and len(answer) > len("Answer:  (0.0 s)"), answer

    browser.set_file("#gen-image", scan)
    browser.evaluate("document.getElementById('gen-task').value = 'reconstruction'")
    browser.evaluate("document.getElementById('gen-submit').click()")
    done = "document.getElementById('gen-status').dataset.done"
    _wait(lambda: browser.evaluate(done), 60, "no generated image on the page", log)
    status = browser.evaluate("document.getElementById('gen-status').textContent")
    assert status.startswith("Generated 64 x 64"), status
    shown = "(() => {const i = document.getElementById('gen-result'); return [i.hidden, i.complete, i.naturalWidth, i.naturalHeight];})()"  # noqa: E501
    assert _wait(lambda: (s := browser.evaluate(shown))[1] and s, 10, "image not decoded") == [
        False, True, 64, 64,
    ]  # fmt: skip

    # A wrong task is refused with the reason on the page, not a crash.
    browser.evaluate("document.getElementById('gen-status').dataset.done = ''")
    browser.evaluate("document.getElementById('gen-task').value = 'text_to_image'")
    browser.evaluate("document.getElementById('gen-submit').click()")
    _wait(lambda: browser.evaluate(done), 30, "no error on the page", log)
    status = browser.evaluate("document.getElementById('gen-status').textContent")
    assert status.startswith("Error: ") and "report" in status, status

    shots = os.environ.get("HEALTHGPT_E2E_SCREENSHOTS")
    if shots:
        png = browser.call("Page.captureScreenshot", format="png")["data"]
        Path(shots).mkdir(parents=True, exist_ok=True)
        (Path(shots) / "app.png").write_bytes(base64.b64decode(png))
