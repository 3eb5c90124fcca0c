"""The HTTP side: FastAPI routes in OpenAI's shapes over a :class:`~colab_tts.serve.engine.StreamingEngine`."""

from __future__ import annotations

import asyncio
import base64
import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from .encode import Encoder
from .engine import END
from .schema import MAX_BODY_BYTES, MEDIA_TYPES, ApiError, SpeechRequest, check_choices, validation_error


def create_app(engine, *, model_name: str, voices: tuple[str, ...], formats: tuple[str, ...], note: str):
    from .page import page

    app = FastAPI(title="colab-tts Orpheus speech", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    def error_response(err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(ApiError)
    async def _api_error(_request, err: ApiError):
        return error_response(err)

    @app.exception_handler(HTTPException)
    async def _http_error(request, err: HTTPException):  # unknown routes and methods, in OpenAI's shape too
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        message = str(err.detail)
        if err.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}: use {(err.headers or {}).get('Allow')}"
        # the framework's headers stay: a 405 must say which methods are allowed (Allow)
        return error_response(ApiError(err.status_code, message, code=code, headers=err.headers))

    @app.exception_handler(Exception)
    async def _unexpected(_request, err: Exception):  # a bug of ours: still one OpenAI error, never a bare 500 page
        return error_response(ApiError(500, f"internal error ({type(err).__name__}): the server's log has the "
                                            "details", code="internal_error", type_="server_error"))

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health():
        stats = engine.stats()
        return JSONResponse({"status": "ok" if stats["state"] == "running" else stats["state"], "model": model_name,
                             "engine": stats}, status_code=200 if stats["state"] == "running" else 503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "colab-tts"}]}

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page(model_name, voices, note)

    @app.post("/v1/audio/speech")
    async def speech(request: Request):
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES:,} bytes: input holds at most "
                                "4,096 characters", code="request_too_large")
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > MAX_BODY_BYTES:
                raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES:,} bytes", code="request_too_large")
        try:
            req = SpeechRequest.model_validate_json(body)
        except ValidationError as err:
            raise validation_error(err.errors(include_url=False)) from None
        check_choices(req, models=(model_name,), voices=voices, formats=formats)
        prompt = engine.tts.prompt_ids(req.input, req.voice)
        if engine.tts._too_long(prompt):
            raise ApiError(400, f"input takes {len(prompt)} tokens of this server's max_model_len "
                                f"{engine.tts.max_model_len}, leaving no room for audio: send shorter text (one "
                                "or two sentences per request) or start the server with more --seconds",
                           param="input", code="input_too_long")
        sampling = engine.sampling(len(prompt), req.temperature, req.seed, full_length=req.ignore_eos)
        stream = engine.submit(prompt, sampling, asyncio.get_running_loop())
        return StreamingResponse(_body(engine, stream, req), media_type="text/event-stream"
                                 if req.stream_format == "sse" else MEDIA_TYPES[req.response_format],
                                 headers={"X-Request-Id": stream.request_id, "Cache-Control": "no-store"})

    return app


async def _body(engine, stream, req):
    """The response body: audio chunks as they are decoded (or SSE events), then the end."""
    encoder = Encoder(req.response_format)
    sse = req.stream_format == "sse"
    try:
        while True:
            item = await stream.queue.get()
            if item is END:
                break
            if isinstance(item, ApiError):
                if sse:
                    yield _event({"type": "error", "error": item.body()["error"]})
                return  # a raw audio stream can only end early; the log and /health say why
            data = encoder.feed(item)
            if data:
                yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}) if sse else data
        tail = encoder.finish()
        if sse:
            if tail:
                yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(tail).decode()})
            usage = {"input_tokens": stream.prompt_tokens, "output_tokens": stream.output_tokens,
                     "total_tokens": stream.prompt_tokens + stream.output_tokens}
            yield _event({"type": "speech.audio.done", "usage": usage})
        elif tail:
            yield tail
    finally:
        encoder.close()
        if not stream.done:  # the client went away (or the server is stopping) before the end
            engine.abort(stream)


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()
