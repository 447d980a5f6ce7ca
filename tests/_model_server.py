"""A tiny OpenAI-compatible model server on 127.0.0.1, as Ollama, vLLM or llama.cpp serve one, for tests
that go over real HTTP (no respx): `POST /v1/chat/completions` and `POST /v1/images/generations`.

    def answer(task: str, request: dict) -> dict:          # task: the "Task: <task>" line of the prompt
        return {"score": 80, "reasoning": "Small and concrete."}

    with ModelServer(answer, model="llama3.1:8b", usage={"prompt_tokens": 120, "completion_tokens": 30}) as server:
        provider = OpenAIProvider(base_url=server.base_url, model="llama3.1")
        ...
    server.requests        # every request: {"path", "headers", "body", "token_cap"}

`answer` returns the JSON object the model "writes" (sent back as the message content), or raises
`Refuse(status, message)` for an error answer in OpenAI's shape. `usage` is a dict, None (the server reports
no usage, as some local servers do), or a function of the task. `model` is what the server says answered.
Images: pass `image=<png bytes>` and the server answers the Images API with it (base64), with `image_usage`.

The output cap: each chat request records `token_cap`, the names among `max_tokens` and
`max_completion_tokens` it carried (sorted; a well-behaved client sends exactly one). With
`token_parameter="max_tokens"` (or the other) the server refuses, as OpenAI does, a request carrying the
other one: HTTP 400, `unsupported_parameter`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["ModelServer", "Refuse", "task_of"]

Answer = Callable[[str, dict[str, Any]], dict[str, Any]]
Usage = dict[str, int] | None | Callable[[str], dict[str, int] | None]
_TASK = re.compile(r"^Task: (\S+)", re.MULTILINE)
TOKEN_CAPS = ("max_completion_tokens", "max_tokens")


class Refuse(Exception):  # noqa: N818 - it is an answer, not an error of the server
    """Raised by an `answer` callback: the server answers `status` with OpenAI's error body."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def task_of(request: dict[str, Any]) -> str:
    """The task a chat request is for: the "Task: <task>" line of its user message ("" if none)."""
    for message in request.get("messages", []):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            found = _TASK.search(message["content"])
            if found:
                return found.group(1)
    return ""


class ModelServer:
    """The server, in a thread; a context manager (or `start()` / `stop()`)."""

    def __init__(
        self,
        answer: Answer,
        *,
        model: str = "llama3.1:8b-instruct-q4_K_M",
        usage: Usage = None,
        image: bytes | None = None,
        image_usage: dict[str, int] | None = None,
        token_parameter: str | None = None,
    ) -> None:
        assert token_parameter in (None, *TOKEN_CAPS), token_parameter
        self.answer = answer
        self.token_parameter = token_parameter
        self.model = model
        self.usage = usage
        self.image = image
        self.image_usage = image_usage
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL to configure as OPENAI_BASE_URL."""
        assert self._server is not None, "the server is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ModelServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="model-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the answers -------------------------------------------------------------------------------------
    def respond(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        token_cap = tuple(sorted(key for key in TOKEN_CAPS if key in body))
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body, "token_cap": token_cap})
        if path.rstrip("/").endswith("/chat/completions"):
            return self._chat(body)
        if path.rstrip("/").endswith("/images/generations"):
            return self._image(body)
        return 404, _error(f"no route {path}", "not_found_error")

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        other = next((key for key in TOKEN_CAPS if key != self.token_parameter), None)
        if self.token_parameter is not None and other in body:
            # OpenAI's answer to `max_tokens` for a model that takes only `max_completion_tokens`.
            message = (
                f"Unsupported parameter: '{other}' is not supported with this model. "
                f"Use '{self.token_parameter}' instead."
            )
            return 400, _error(message, "invalid_request_error", param=other, code="unsupported_parameter")
        task = task_of(body)
        try:
            content = self.answer(task, body)
        except Refuse as refused:
            return refused.status, _error(refused.message, refused.kind)
        usage = self.usage(task) if callable(self.usage) else self.usage
        reply: dict[str, Any] = {
            "id": "chatcmpl-stub-1",
            "object": "chat.completion",
            "created": 1764130000,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": json.dumps(content)},
                    "finish_reason": "stop",
                }
            ],
        }
        if usage is not None:
            reply["usage"] = usage | {"total_tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)}
        return 200, reply

    def _image(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.image is None:
            return 404, _error("this server makes no images", "not_found_error")
        reply: dict[str, Any] = {
            "created": 1764130000,
            "model": self.model,
            "data": [{"b64_json": base64.b64encode(self.image).decode()}],
        }
        if self.image_usage is not None:
            reply["usage"] = self.image_usage
        return 200, reply


def _error(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                status, reply = 400, _error("the body is not JSON", "invalid_request_error")
            else:
                status, reply = server.respond(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `server.requests`."""

    return Handler


# A blog run's answers, task by task, from a served model (the acceptance and attack tests share them).
SERVED_MODEL = "llama3.1:8b-instruct-q4_K_M"
BLOG_RUN_ANSWERS: dict[str, dict[str, Any]] = {
    "judge": {"score": 81, "reasoning": "A clear problem with concrete points."},
    "choose_format": {"format": "blog_post", "reasoning": "It explains."},
    "plan": {
        "approach": "A practical explainer for developers who fear regular expressions.",
        "outline": ["Why patterns scare people: the problem", "Reading a pattern aloud: the method", "Try it"],
    },
    "blog_post": {
        "title": "Read a regular expression aloud",
        "sections": [
            {"heading": "The problem", "paragraphs": ["Patterns look like line noise."]},
            {"heading": "The method", "paragraphs": ["Read each token in plain words, left to right."]},
            {"heading": "Try it", "paragraphs": ["Paste a pattern and read what it matches."]},
        ],
        "tags": ["regex", "tools"],
        "meta_description": "Read any regular expression in plain words.",
        "social_post": "Regular expressions, read aloud in plain words.",
    },
    "review": {"score": 84, "feedback": ["Add one worked example in The method."]},
}
