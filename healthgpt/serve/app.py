"""`healthgpt app`: one page to ask about an uploaded image or run a generation task.

A small Starlette app (Starlette and uvicorn already come with the Dagster webserver, so the
app adds no dependency): `GET /` is the page, `POST /api/ask` and `POST /api/generate` take
a JSON body (the image as base64, read in the browser), run `Inference` and answer JSON (the
text, or the PNG as base64). An upload is capped while it streams in
(`MAX_REQUEST_BYTES`), decoded in memory by the project's guarded decoder and never written
to disk. Requests run one at a time on a worker thread, so one model serves them in order;
an upload is decoded there too, under the same lock, so requests waiting their turn hold
only their encoded bytes, and its header may declare at most `MAX_UPLOAD_PIXELS` (far below
the ingest limit). Every field is type-checked and length-capped before anything runs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import io
import json
import logging
import time
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from healthgpt.serve.inference import (
    MAX_FIELD_CHARS,
    MAX_IMAGE_BYTES,
    MAX_TEXT_CHARS,
    MAX_UPLOAD_PIXELS,
    TASKS,
    Inference,
    ServeError,
    read_image,
)

LOG = logging.getLogger("healthgpt.app")
# Base64 adds a third; the rest is the JSON around it and the question or report.
MAX_REQUEST_BYTES = MAX_IMAGE_BYTES * 4 // 3 + (256 << 10)


class TooLarge(ServeError):
    """A request body over `MAX_REQUEST_BYTES`."""


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read with a cap: a body over the limit is refused as soon
    as it passes it, whatever Content-Length claims."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise TooLarge(f"request of {declared} bytes; at most {MAX_REQUEST_BYTES}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_BYTES:
            raise TooLarge(f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON or bytes; nesting too deep to parse
        raise ServeError("the request is not JSON") from None
    if not isinstance(payload, dict):
        raise ServeError("the request is not a JSON object")
    return payload


def _field(payload: dict[str, Any], key: str, limit: int = MAX_FIELD_CHARS) -> str | None:
    """The string in `payload[key]` (None when absent, null or empty); anything but a string,
    or a string over `limit` characters, is refused."""
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ServeError(f"{key} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise ServeError(f"{key} has {len(value)} characters, more than {limit}")
    return value


def _upload(payload: dict[str, Any]) -> tuple[str, str] | None:
    """The uploaded image as sent (base64 in `image`) and its file name (`name`, escaped), or
    None; type-checked here, decoded later by `_decode` on the worker thread."""
    encoded = _field(payload, "image", MAX_REQUEST_BYTES)
    if encoded is None:
        return None
    return encoded, html.escape(_field(payload, "name", 255) or "upload")


def _decode(upload: tuple[str, str] | None, max_pixels: int) -> Image.Image | None:
    """The image of an `_upload`: base64 decoded, its header checked against `max_pixels`,
    then decoded by the guarded decoder."""
    if upload is None:
        return None
    encoded, name = upload
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ServeError("image is not valid base64") from None
    return read_image(data, name, max_pixels)


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def create_app(inference: Inference, max_upload_pixels: int = MAX_UPLOAD_PIXELS) -> Starlette:
    """The app around one loaded model; an upload may declare at most `max_upload_pixels`."""
    lock = asyncio.Lock()

    async def run(fn, *args: Any, **kwargs: Any) -> Any:
        async with lock:
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(render_page(inference.label))

    async def handle(request: Request, action) -> JSONResponse:
        try:
            payload = await _json_body(request)
            started = time.perf_counter()
            result = await action(payload)
        except TooLarge as error:
            return JSONResponse({"error": str(error)}, status_code=413)
        except ServeError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        result["seconds"] = round(time.perf_counter() - started, 3)
        return JSONResponse(result)

    async def ask(request: Request) -> JSONResponse:
        async def action(payload: dict[str, Any]) -> dict[str, Any]:
            upload = _upload(payload)
            question = _field(payload, "question", MAX_TEXT_CHARS) or ""

            def work() -> str:
                return inference.ask(_decode(upload, max_upload_pixels), question)

            return {"answer": await run(work)}

        return await handle(request, action)

    async def generate(request: Request) -> JSONResponse:
        async def action(payload: dict[str, Any]) -> dict[str, Any]:
            task = _field(payload, "task") or ""
            upload = _upload(payload)
            fields = {
                "report": _field(payload, "report", MAX_TEXT_CHARS),
                "body_part": _field(payload, "body_part"),
                "modality": _field(payload, "modality") or "MRI",
            }

            def work() -> Image.Image:
                return inference.generate(task, _decode(upload, max_upload_pixels), **fields)

            out = await run(work)
            return {"png": _png_base64(out), "width": out.width, "height": out.height}

        return await handle(request, action)

    routes = [
        Route("/", page),
        Route("/api/ask", ask, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def render_page(label: str) -> str:
    """The one HTML page: two forms, results shown in place."""
    options = "".join(f'<option value="{t}">{t}</option>' for t in TASKS)
    return PAGE.replace("{label}", html.escape(label)).replace("{options}", options)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>HealthGPT</title>
<style>
body{font-family:sans-serif;max-width:960px;margin:1.5em auto;padding:0 1em;color:#222}
section{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0}
label{display:block;margin:.4em 0}
textarea,input[type=text]{width:100%;box-sizing:border-box}
.out{margin-top:.8em;white-space:pre-wrap}
.error{color:#b00}
.note{font-size:.85em;color:#666}
img{max-width:384px;image-rendering:pixelated;border:1px solid #ccc}
</style></head><body>
<h1>HealthGPT</h1>
<p class="note">Model: {label}. For research only, not for clinical use.
Uploads stay in memory and are not stored.</p>
<section><h2>Ask about an image</h2>
<form id="ask">
<label>Image <input type="file" id="ask-image" accept="image/*"></label>
<label>Question <input type="text" id="ask-question" value="What modality is this image?">
</label><button type="submit" id="ask-submit">Ask</button></form>
<div class="out" id="ask-answer"></div></section>
<section><h2>Generate an image</h2>
<form id="generate">
<label>Task <select id="gen-task">{options}</select></label>
<label>Input image <input type="file" id="gen-image" accept="image/*"></label>
<label>Report (text_to_image) <textarea id="gen-report" rows="3"></textarea></label>
<label>Body part <input type="text" id="gen-body-part" placeholder="head, pelvis, chest">
</label><button type="submit" id="gen-submit">Generate</button></form>
<div class="out" id="gen-status"></div><img id="gen-result" alt="" hidden></section>
<script>
function readFile(input){
  const file=input.files[0];
  if(!file) return Promise.resolve(null);
  return new Promise((ok,fail)=>{const r=new FileReader();
    r.onload=()=>ok({name:file.name,data:r.result.split(',')[1]});
    r.onerror=()=>fail(r.error);r.readAsDataURL(file);});
}
async function post(url,body){
  const res=await fetch(url,{method:'POST',headers:{'Content-Type':'application/json'},
    body:JSON.stringify(body)});
  const data=await res.json();
  if(!res.ok) throw new Error(data.error||res.statusText);
  return data;
}
function show(el,text,error){el.textContent=text;el.className='out'+(error?' error':'');}
document.getElementById('ask').addEventListener('submit',async e=>{
  e.preventDefault();const out=document.getElementById('ask-answer');show(out,'Thinking...');
  try{const f=await readFile(document.getElementById('ask-image'));
    const data=await post('/api/ask',{question:document.getElementById('ask-question').value,
      image:f&&f.data,name:f&&f.name});
    show(out,'Answer: '+data.answer+' ('+data.seconds+' s)');out.dataset.done='1';}
  catch(err){show(out,'Error: '+err.message,true);out.dataset.done='1';}
});
document.getElementById('generate').addEventListener('submit',async e=>{
  e.preventDefault();const out=document.getElementById('gen-status');
  const img=document.getElementById('gen-result');img.hidden=true;show(out,'Generating...');
  try{const task=document.getElementById('gen-task').value,fromText=task==='text_to_image';
    const f=fromText?null:await readFile(document.getElementById('gen-image'));
    const data=await post('/api/generate',{task:task,image:f&&f.data,name:f&&f.name,
      report:fromText?document.getElementById('gen-report').value:'',
      body_part:document.getElementById('gen-body-part').value});
    img.src='data:image/png;base64,'+data.png;img.hidden=false;
    show(out,'Generated '+data.width+' x '+data.height+' ('+data.seconds+' s)');
    out.dataset.done='1';}
  catch(err){show(out,'Error: '+err.message,true);out.dataset.done='1';}
});
</script></body></html>
"""


def serve(
    inference: Inference,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_pixels: int = MAX_UPLOAD_PIXELS,
) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    app = create_app(inference, max_upload_pixels)
    uvicorn.run(app, host=host, port=port, log_level="info")
