"""The app's two endpoints, called as ASGI (no server, no model): what reaches the model,
and what is refused before it does."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from typing import Any

import pytest
from PIL import Image

from healthgpt.serve.app import MAX_REQUEST_BYTES, create_app, render_page
from healthgpt.serve.inference import TASKS, ServeError


class Recorder:
    """Stands in for `Inference`: records the calls, answers like the model would."""

    label = "checkpoint <test>"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def ask(self, image: Image.Image | None, question: str) -> str:
        self.calls.append(("ask", image and image.size, question))
        return "yes"

    def generate(self, task: str, image: Image.Image | None, **kwargs: Any) -> Image.Image:
        if task not in TASKS:
            raise ServeError(f"unknown task {task!r}")
        self.calls.append(("generate", task, image and image.size, kwargs))
        return Image.new("RGB", (16, 8))


def _call(app, path: str, body: bytes, method: str = "POST") -> tuple[int, bytes]:
    """One request through the ASGI interface; the body arrives in 64 KiB chunks."""
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    scope = {
        "type": "http", "http_version": "1.1", "method": method, "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
        "headers": [(b"content-type", b"application/json")], "server": ("test", 80),
        "client": ("test", 1),
    }  # fmt: skip
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def _png(size: tuple[int, int] = (20, 10)) -> str:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def model() -> Recorder:
    return Recorder()


def test_page_has_both_forms_and_every_task(model):
    status, body = _call(create_app(model), "/", b"", method="GET")
    page = body.decode()
    assert status == 200 and 'id="ask"' in page and 'id="generate"' in page
    assert all(f'<option value="{task}">' in page for task in TASKS)
    assert "checkpoint &lt;test&gt;" in page and "not for clinical use" in page
    assert render_page("<b>").count("&lt;b&gt;") == 1


def test_ask_and_generate_reach_the_model(model):
    app = create_app(model)
    status, body = _call(app, "/api/ask", json.dumps({"question": "q?", "image": _png()}).encode())
    assert status == 200 and json.loads(body)["answer"] == "yes"
    payload = {"task": "reconstruction", "image": _png(), "body_part": "pelvis"}
    status, body = _call(app, "/api/generate", json.dumps(payload).encode())
    result = json.loads(body)
    assert status == 200 and (result["width"], result["height"]) == (16, 8)
    with Image.open(io.BytesIO(base64.b64decode(result["png"]))) as image:
        assert image.size == (16, 8)
    assert model.calls == [
        ("ask", (20, 10), "q?"),
        ("generate", "reconstruction", (20, 10),
         {"report": None, "body_part": "pelvis", "modality": "MRI"}),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "not JSON"),
        (b"[1, 2]", 400, "not a JSON object"),
        (json.dumps({"question": "q", "image": "***"}).encode(), 400, "not valid base64"),
        (
            json.dumps(
                {"question": "q", "image": base64.b64encode(b"GIF89a...").decode()}
            ).encode(),
            400,
            "not a readable image",
        ),
        (b'{"image": "' + b"A" * (MAX_REQUEST_BYTES + 8) + b'"}', 413, "larger than"),
    ],
)
def test_bad_requests_are_refused_before_the_model(model, body, status, message):
    got, reply = _call(create_app(model), "/api/ask", body)
    assert got == status and message in json.loads(reply)["error"]
    assert model.calls == []


def test_a_model_refusal_is_shown_as_an_error(model):
    got, reply = _call(create_app(model), "/api/generate", b'{"task": "ct_to_pet"}')
    assert got == 400 and "unknown task 'ct_to_pet'" in json.loads(reply)["error"]


@pytest.mark.parametrize(
    ("path", "payload", "message"),
    [
        ("/api/ask", {"question": ["x"], "image": _png()}, "question must be a string, not list"),
        ("/api/generate", {"task": "text_to_image", "report": ["a"]}, "report must be a string"),
        ("/api/generate", {"task": "text_to_image", "report": {"a": 1}}, "report must be a"),
        ("/api/generate", {"task": ["ct_to_mri"]}, "task must be a string"),
        ("/api/generate", {"task": "ct_to_mri", "image": _png(), "body_part": {"x": 1}},
         "body_part must be a string"),
        ("/api/generate", {"task": "super_resolution", "image": _png(), "modality": "M" * 5000},
         "modality has 5000 characters"),
        ("/api/ask", {"question": "q" * 20_001}, "question has 20001 characters"),
        ("/api/ask", {"question": "q", "image": _png(), "name": 7}, "name must be a string"),
        ("/api/ask", {"question": "q", "image": 12}, "image must be a string"),
    ],
)  # fmt: skip
def test_fields_of_the_wrong_type_or_length_are_refused(model, path, payload, message):
    got, reply = _call(create_app(model), path, json.dumps(payload).encode())
    assert got == 400 and message in json.loads(reply)["error"]
    assert model.calls == []


def test_json_nested_too_deep_is_refused_as_not_json(model):
    got, reply = _call(create_app(model), "/api/ask", b"[" * 100_000 + b"]" * 100_000)
    assert got == 400 and "not JSON" in json.loads(reply)["error"]


def _png_bytes(size: tuple[int, int], mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_upload_is_capped_far_below_the_ingest_limit(model):
    """A small file declaring 4097 x 4096 pixels is refused from its header by default, and
    the cap is the app's to set."""
    big = base64.b64encode(_png_bytes((4097, 4096), "1")).decode()
    body = json.dumps({"question": "q", "image": big}).encode()
    got, reply = _call(create_app(model), "/api/ask", body)
    assert got == 400 and "max_image_pixels" in json.loads(reply)["error"]
    small = json.dumps({"question": "q", "image": _png((20, 10))}).encode()
    got, reply = _call(create_app(model, max_upload_pixels=199), "/api/ask", small)
    assert got == 400 and "20 x 10" in json.loads(reply)["error"]
    assert model.calls == []
    assert _call(create_app(model, max_upload_pixels=200), "/api/ask", small)[0] == 200


def test_uploads_are_decoded_on_the_worker_thread(model, monkeypatch):
    """Decoding waits for the model's turn, off the event loop."""
    import healthgpt.serve.app as app_module

    threads = []
    real = app_module.read_image

    def recording(*args: Any, **kwargs: Any) -> Image.Image:
        threads.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(app_module, "read_image", recording)
    body = json.dumps({"question": "q", "image": _png()}).encode()
    assert _call(create_app(model), "/api/ask", body)[0] == 200
    assert threads == [False]


def test_the_app_command_serves_with_the_max_upload_pixels_given(model, monkeypatch, capsys):
    """`healthgpt app --max-upload-pixels N`: the parser takes it and the served app refuses
    an upload declaring more than N pixels; without it the library's default holds."""
    import uvicorn

    import healthgpt.cli as cli
    import healthgpt.serve.inference as inference_module
    from healthgpt.serve.inference import MAX_UPLOAD_PIXELS

    served = []
    monkeypatch.setattr(cli, "_load_inference", lambda args: model)
    monkeypatch.setattr(inference_module, "startup_line", lambda inference, seconds: "ready")
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(app))
    assert cli.build_parser().parse_args(["app"]).max_upload_pixels == MAX_UPLOAD_PIXELS
    small = json.dumps({"question": "q", "image": _png((20, 10))}).encode()
    assert cli.main(["app", "--max-upload-pixels", "199"]) == 0
    got, reply = _call(served[-1], "/api/ask", small)
    assert got == 400 and "20 x 10" in json.loads(reply)["error"] and model.calls == []
    assert cli.main(["app", "--max-upload-pixels", "200"]) == 0
    assert _call(served[-1], "/api/ask", small)[0] == 200
    for bad in ("0", "4k"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["app", "--max-upload-pixels", bad])
        assert exit_info.value.code == 2
        assert "expected a positive integer" in capsys.readouterr().err
