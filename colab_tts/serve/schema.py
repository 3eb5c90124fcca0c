"""What ``POST /v1/audio/speech`` accepts and how errors look: OpenAI's shapes, checked at the edge.

The request follows OpenAI's ``audio.speech.create`` (https://platform.openai.com/docs/api-reference/audio/createSpeech):
``model``, ``input`` (at most 4,096 characters), ``voice``, ``response_format``, ``speed``, ``stream_format``
(``audio`` or ``sse``), ``instructions``. Three extensions, sent with the openai client's ``extra_body`` as vLLM's
OpenAI server takes its extra sampling fields: ``temperature`` (0 = greedy), ``seed`` and ``ignore_eos`` (speak
until ``max_model_len`` is full instead of stopping at Orpheus's end of speech, as vLLM's ``ignore_eos``). Errors are OpenAI's
``{"error": {"message", "type", "param", "code"}}``; pydantic checks types and ranges before any engine work.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_INPUT_CHARS = 4096  # OpenAI's limit for `input`
MAX_BODY_BYTES = 64 * 1024  # a 4,096-character request in JSON is far below this; larger bodies are refused
STREAM_FORMATS = ("audio", "sse")
# What each response_format needs: pcm and wav are written here, the rest by libsndfile (soundfile) when it can.
# Every format streams as it is decoded (colab_tts.serve.encode says how each container allows it); with
# stream_format "sse" each speech.audio.delta carries the next bytes of that same stream, base64-encoded.
_SNDFILE = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
MEDIA_TYPES = {"pcm": "audio/pcm", "wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg",
               "opus": "audio/ogg"}


def supported_formats() -> tuple[str, ...]:
    """pcm, wav, and those of flac / mp3 / opus that this libsndfile writes."""
    import soundfile

    formats = soundfile.available_formats()
    found = ["pcm", "wav"]
    for name, (container, subtype) in _SNDFILE.items():
        if container in formats and subtype in soundfile.available_subtypes(container):
            found.append(name)
    return tuple(found)


def sndfile_format(name: str) -> tuple[str, str]:
    return _SNDFILE[name]


class SpeechRequest(BaseModel):
    """OpenAI's speech request; unknown fields are refused (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1, max_length=256)
    input: str = Field(max_length=MAX_INPUT_CHARS)
    voice: str = Field(min_length=1, max_length=64)
    response_format: str = "pcm"
    speed: float = 1.0
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = Field(default=None, max_length=MAX_INPUT_CHARS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0, lt=2 ** 63)
    ignore_eos: bool = False


class ApiError(Exception):
    """One error as OpenAI shapes it; ``status`` is the HTTP status it goes out with."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_error(errors) -> ApiError:
    """pydantic's first error as one OpenAI 400 naming the field and what it must be."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return ApiError(400, "the request body is not valid JSON: send a JSON object such as "
                             '{"model": ..., "input": "Hello", "voice": "tara"}', code="invalid_json")
    if first.get("type") == "missing":
        return ApiError(400, f"missing required field {param!r}", param=param, code="missing_required_parameter")
    if first.get("type") == "extra_forbidden":
        return ApiError(400, f"unknown field {param!r}: this endpoint takes model, input, voice, response_format, "
                             "speed, stream_format, instructions (and the extensions temperature, seed, ignore_eos)",
                        param=param, code="unknown_parameter")
    return ApiError(400, f"{param or 'body'}: {first.get('msg')}", param=param, code="invalid_value")


def _did_you_mean(value: str, choices) -> str:
    """' (did you mean 'mp3'?)' where ``value`` is a choice but for its case or surrounding spaces."""
    near = [c for c in choices if c.lower() == value.strip().lower()]
    return f" (did you mean {near[0]!r}?)" if near else ""


def check_choices(request: SpeechRequest, *, models: tuple[str, ...], voices: tuple[str, ...],
                  formats: tuple[str, ...]) -> None:
    """The checks pydantic cannot make: the served model, Orpheus's voices, this machine's formats."""
    if request.model not in models:
        raise ApiError(404, f"model {request.model!r} is not served here; this server serves: {', '.join(models)} "
                            "(GET /v1/models)", param="model", code="model_not_found")
    if not request.input.strip():
        raise ApiError(400, "input is empty: give the text to speak", param="input", code="empty_input")
    if request.voice not in voices:
        raise ApiError(400, f"unknown voice {request.voice!r}{_did_you_mean(request.voice, voices)}; Orpheus's "
                            f"voices are: {', '.join(voices)}", param="voice", code="invalid_voice")
    if request.response_format not in formats:
        why = (f": this machine's libsndfile does not write {request.response_format}"
               if request.response_format in _SNDFILE else "")
        why = why or _did_you_mean(request.response_format, formats)
        raise ApiError(400, f"response_format {request.response_format!r} is not supported here{why}; supported: "
                            f"{', '.join(formats)}", param="response_format", code="unsupported_format")
    if request.speed != 1.0:
        raise ApiError(400, f"speed {request.speed!r} is not supported: Orpheus speaks at its own pace; send "
                            "speed 1.0 (or leave it out)", param="speed", code="unsupported_value")
    if request.instructions:
        raise ApiError(400, "instructions are not supported by Orpheus: leave them out (Orpheus takes emotion tags "
                            "such as <laugh> inside the input)", param="instructions", code="unsupported_value")
