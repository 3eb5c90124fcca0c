"""Orpheus as an OpenAI-compatible streaming speech endpoint (``python -m colab_tts serve``).

    server = colab_tts.serve.start(seconds=30, concurrency=4)   # plans for this GPU, serves in the background
    server.url                                                   # http://127.0.0.1:8000
    server.stop()                                                # ends every stream, frees the GPU

Modules: ``schema`` (request, validation, errors), ``streaming`` (SNAC batched over streams), ``engine``
(vLLM stepped in one thread), ``encode`` (response formats), ``app`` (routes), ``page`` (GET /),
``server`` (plan, start, stop).
"""

from .server import ServePlan, SpeechServer, plan_server, predicted_plan, start

__all__ = ["ServePlan", "SpeechServer", "plan_server", "predicted_plan", "start"]
