"""OpenAI (and any OpenAI-compatible server) and Anthropic providers, through their official SDKs (the
optional `llm` extra).

Both SDKs already retry 408/409/429/5xx with exponential backoff (honouring Retry-After); we bound it
with `max_retries` and a timeout, cap each call's output (`MAX_OUTPUT_TOKENS`), then validate the answer
against the pydantic schema. A completion records the model the API says answered and the tokens it
reported; a failed call raises `ProviderError` carrying one `FailedCall`, with the tokens the API reported
when it answered at all (an answer cut at the cap, invalid JSON, off-schema). Neither class reads the
environment: the SDKs' own fallbacks to OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY are never
reached, because a key and a base URL are always passed (`Settings` reads them).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from ..._exceptions import ConfigurationError
from ..._settings import TokenParameter
from .base import MAX_OUTPUT_TOKENS, Completion, FailedCall, IdeaBrief, ProviderError, RenderedImage, Task

__all__ = [
    "ANTHROPIC_URL",
    "LOCAL_SERVER_KEY",
    "OPENAI_TOKEN_PARAMETER_HOSTS",
    "OPENAI_URL",
    "AnthropicProvider",
    "OpenAIImageRenderer",
    "OpenAIProvider",
    "token_parameter_for",
]

T = TypeVar("T", bound=BaseModel)

OPENAI_URL = "https://api.openai.com/v1"
ANTHROPIC_URL = "https://api.anthropic.com"
LOCAL_SERVER_KEY = "not-needed"
"""The API key sent to a server at a base URL when none is configured: the SDKs insist on one, and local
servers (Ollama, vLLM, llama.cpp) ignore it."""

TIMEOUT_TOKENS = 4_000
"""A call allowed more output tokens than this waits proportionally longer than `timeout`."""

SYSTEM = (
    "You expand a person's raw idea into finished content. Work only from the idea you are given; "
    "do not invent facts, links or quotes. Answer with the requested structure only."
)


def _user_message(task: Task, idea: IdeaBrief, instructions: str) -> str:
    return f"Task: {task}\n{instructions}\n\nThe idea:\n{idea.as_prompt()}"


def _api_key(api_key: str | None, base_url: str | None, who: str) -> str:
    if api_key:
        return api_key
    if base_url:
        return LOCAL_SERVER_KEY
    raise ConfigurationError(f"{who} needs an api_key, unless base_url names a compatible server that needs none")


def _openai(
    api_key: str | None, timeout: float, max_retries: int, http_client: Any, base_url: str | None
) -> tuple[Any, Any]:
    """(the `openai` module, a client): the module's APIError is what failures raise."""
    key = _api_key(api_key, base_url, "OpenAI")
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ProviderError("OpenAI needs: pip install 'idea-expansion[llm]'") from exc
    client = openai.OpenAI(
        api_key=key,
        timeout=timeout,
        max_retries=max_retries,
        http_client=http_client,
        base_url=base_url or OPENAI_URL,
    )
    return openai, client


def _usage(usage: Any, input_key: str, output_key: str) -> tuple[int, int] | None:
    """(input, output) tokens of an answer's usage; None when the server sent none (some local servers),
    or counts that are not whole numbers of at least 0 (a broken or hostile server): not reported, rather
    than a wrong count. A count left out (null) is 0."""
    counts = [getattr(usage, key, None) for key in (input_key, output_key)] if usage is not None else []
    if len(counts) != 2 or any(not (c is None or (type(c) is int and c >= 0)) for c in counts):
        return None
    return counts[0] or 0, counts[1] or 0


def _failure(provider: str, model: str, usage: tuple[int, int] | None) -> Callable[[str], ProviderError]:
    """The `ProviderError` of a failed call, carrying it as a `FailedCall` with what it spent: the usage
    of the answer, or 0 tokens (not reported) when there was no answer or it named no usage."""

    def failed(message: str) -> ProviderError:
        tokens = usage or (0, 0)
        call = FailedCall(provider, model, tokens[0], tokens[1], message, usage_reported=usage is not None)
        return ProviderError(message, failed_calls=(call,))

    return failed


def _validated(schema: type[T], data: Any, provider: str, failed: Callable[[str], ProviderError]) -> T:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise failed(f"{provider} returned output that does not fit {schema.__name__}: {exc}") from None


OPENAI_TOKEN_PARAMETER_HOSTS = ("api.openai.com", ".openai.azure.com")
"""Hosts that get `max_completion_tokens` under `token_parameter="auto"` (a leading dot: any subdomain)."""


def token_parameter_for(
    base_url: str | None, setting: TokenParameter = "auto"
) -> Literal["max_completion_tokens", "max_tokens"]:
    """The one parameter an OpenAI-compatible server gets the output cap in. `auto`: OpenAI itself (no
    base URL, or api.openai.com) and Azure OpenAI (*.openai.azure.com) get `max_completion_tokens` (their
    newer models refuse `max_tokens`); any other server gets `max_tokens`, the one Ollama, vLLM and
    llama.cpp read. Never both: some servers refuse a request that carries both.

    Raises:
        ConfigurationError: a setting other than auto, max_completion_tokens or max_tokens."""
    if setting not in get_args(TokenParameter):
        raise ConfigurationError(
            f"token_parameter: {setting!r} is not one of auto, max_completion_tokens or max_tokens"
        )
    if setting != "auto":
        return setting
    host = (urlsplit(base_url or OPENAI_URL).hostname or "").lower()
    openai = any(host == h or (h.startswith(".") and host.endswith(h)) for h in OPENAI_TOKEN_PARAMETER_HOSTS)
    return "max_completion_tokens" if openai else "max_tokens"


def _limits(overrides: Mapping[Task, int] | None) -> dict[Task, int]:
    limits = dict(MAX_OUTPUT_TOKENS)
    for task, limit in (overrides or {}).items():
        if task not in limits or isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"max_output_tokens: {task!r}: {limit!r} is not a task and a positive limit")
        limits[task] = limit
    return limits


def _models(default: str, models: Mapping[Task, str] | None) -> dict[Task, str]:
    chosen = {task: default for task in MAX_OUTPUT_TOKENS}
    for task, model in (models or {}).items():
        if task not in chosen or not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"models: {task!r}: {model!r} is not a task and a model name")
        chosen[task] = model.strip()
    return chosen


class _ModelProvider:
    """What the two model providers share: a model and an output cap per task, a timeout that grows with
    the cap."""

    def __init__(
        self,
        model: str,
        models: Mapping[Task, str] | None,
        max_output_tokens: Mapping[Task, int] | None,
        timeout: float,
    ) -> None:
        self.model = model
        self.models = _models(model, models)
        self.max_output_tokens = _limits(max_output_tokens)
        self.timeout = timeout

    def model_for(self, task: Task) -> str:
        """The model this provider asks for `task`."""
        return self.models[task]

    def _timeout_for(self, task: Task) -> float:
        return self.timeout * max(1.0, self.max_output_tokens[task] / TIMEOUT_TOKENS)


class OpenAIProvider(_ModelProvider):
    """Chat Completions with a JSON-schema response format, against api.openai.com or any OpenAI-compatible
    server (`base_url`; its key is optional). Servers that refuse `response_format: json_schema` (HTTP 400)
    fail the call with `ProviderError`, and a fallback chain moves on."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = "gpt-4o-mini",
        models: Mapping[Task, str] | None = None,
        max_output_tokens: Mapping[Task, int] | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        http_client: Any = None,
        base_url: str | None = None,
        token_parameter: TokenParameter = "auto",
    ) -> None:
        """
        Args:
            api_key: required for api.openai.com; optional with `base_url` (a placeholder is sent).
            model: the model of every task not in `models`.
            models: a model per task, e.g. {"github_repo": "gpt-4.1"}.
            max_output_tokens: caps per task over `MAX_OUTPUT_TOKENS`.
            timeout: seconds per call (longer for calls allowed more than 4,000 output tokens).
            max_retries: retries after 408/409/429/5xx and connection errors.
            http_client: an httpx.Client (tests, proxies).
            base_url: an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1.
            token_parameter: the parameter the output cap is sent in, only ever one: `auto` (the default)
                sends `max_completion_tokens` to api.openai.com and Azure OpenAI, `max_tokens` to any other
                server (`token_parameter_for`); or name one of the two.

        Raises:
            ConfigurationError: no api_key and no base_url, a model or limit for an unknown task, or an
                unknown token_parameter.
        """
        super().__init__(model, models, max_output_tokens, timeout)
        self.base_url = base_url
        self.token_parameter = token_parameter_for(base_url, token_parameter)
        """The parameter this provider sends the output cap in."""
        self._errors, self._client = _openai(api_key, timeout, max_retries, http_client, base_url)
        self.name = f"openai:{model}"

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        model = self.model_for(task)
        request: dict[str, Any] = {
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": _user_message(task, idea, instructions)},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
            },
            self.token_parameter: self.max_output_tokens[task],
            "timeout": self._timeout_for(task),
        }
        try:
            response = self._client.chat.completions.create(**request)
        except self._errors.APIError as exc:
            raise _failure("openai", model, None)(f"OpenAI request failed: {exc}") from None
        # No usage from servers that do not report it: 0 tokens, not reported; the model still recorded.
        usage = _usage(response.usage, "prompt_tokens", "completion_tokens")
        answered = response.model or model
        failed = _failure("openai", answered, usage)
        if not response.choices:
            raise failed("OpenAI answered without a choice")
        choice = response.choices[0]
        # Only an answer cut short (at the cap, or by a content filter) is refused for its finish reason:
        # compatible servers name a complete one in their own words ("eos", "tool_calls", or none at all),
        # and the content is checked below anyway.
        if choice.finish_reason in ("length", "content_filter"):
            raise failed(f"OpenAI stopped early ({choice.finish_reason}) without a complete answer")
        if not choice.message.content:
            refusal = getattr(choice.message, "refusal", None)
            raise failed(f"OpenAI refused: {refusal}" if refusal else "OpenAI answered without content")
        try:
            data = json.loads(choice.message.content)
        except json.JSONDecodeError as exc:
            raise failed(f"OpenAI returned invalid JSON: {exc}") from None
        return Completion(
            _validated(schema, data, "OpenAI", failed),
            *(usage or (0, 0)),
            answered,
            provider="openai",
            usage_reported=usage is not None,
        )


class AnthropicProvider(_ModelProvider):
    """Messages API with one forced tool whose input schema is the pydantic schema."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = "claude-haiku-4-5",
        models: Mapping[Task, str] | None = None,
        max_output_tokens: Mapping[Task, int] | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        http_client: Any = None,
        base_url: str | None = None,
    ) -> None:
        """
        Args:
            api_key: required for api.anthropic.com; optional with `base_url` (a placeholder is sent).
            model: the model of every task not in `models`.
            models: a model per task, e.g. {"github_repo": "claude-sonnet-4-5"}.
            max_output_tokens: caps per task over `MAX_OUTPUT_TOKENS` (sent as `max_tokens`).
            timeout: seconds per call (longer for calls allowed more than 4,000 output tokens).
            max_retries: retries after 408/409/429/5xx/529 and connection errors.
            http_client: an `httpx2.Client` (tests, proxies), not an `httpx.Client`: the anthropic SDK 2 is
                built on httpx2 and refuses the other (`OpenAIProvider` takes an `httpx.Client`).
            base_url: an Anthropic-compatible server.

        Raises:
            ConfigurationError: no api_key and no base_url, or a model or limit for an unknown task.
        """
        super().__init__(model, models, max_output_tokens, timeout)
        key = _api_key(api_key, base_url, "Anthropic")
        try:
            import anthropic
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ProviderError("the Anthropic provider needs: pip install 'idea-expansion[llm]'") from exc
        self._errors = anthropic
        self._client = anthropic.Anthropic(
            api_key=key,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
            base_url=base_url or ANTHROPIC_URL,
        )
        self.base_url = base_url
        self.name = f"anthropic:{model}"

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        model = self.model_for(task)
        tool = {
            "name": "answer",
            "description": f"Return the {schema.__name__}.",
            "input_schema": schema.model_json_schema(),
        }
        request: dict[str, Any] = {
            "model": model,
            "max_tokens": self.max_output_tokens[task],
            "system": SYSTEM,
            "messages": [{"role": "user", "content": _user_message(task, idea, instructions)}],
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": "answer"},
            # Passed per call, so the SDK's refusal of long non-streaming calls (over 10 minutes expected)
            # does not apply: our caps keep each call well under that.
            "timeout": self._timeout_for(task),
        }
        try:
            response = self._client.messages.create(**request)
        except self._errors.APIError as exc:
            raise _failure("anthropic", model, None)(f"Anthropic request failed: {exc}") from None
        usage = _usage(response.usage, "input_tokens", "output_tokens")
        answered = response.model or model
        failed = _failure("anthropic", answered, usage)
        if response.stop_reason == "max_tokens":
            raise failed(f"Anthropic stopped at max_tokens ({request['max_tokens']}) without a complete answer")
        for block in response.content:
            if block.type == "tool_use" and block.name == "answer":
                return Completion(
                    _validated(schema, block.input, "Anthropic", failed),
                    *(usage or (0, 0)),
                    answered,
                    provider="anthropic",
                    usage_reported=usage is not None,
                )
        raise failed(f"Anthropic answered without the structured result (stop reason {response.stop_reason})")


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (always the first)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 24 or data[12:16] != b"IHDR":
        raise ProviderError("OpenAI returned something that is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


class OpenAIImageRenderer:
    """Images from OpenAI's Images API (base64 PNG, as the gpt-image models answer), for image mode
    `model`. `render` returns a `RenderedImage` with the model and the tokens the API reported, and the
    size read from the PNG itself."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = "gpt-image-1",
        size: str = "1536x1024",
        timeout: float = 120.0,
        max_retries: int = 2,
        http_client: Any = None,
        base_url: str | None = None,
    ) -> None:
        self._errors, self._client = _openai(api_key, timeout, max_retries, http_client, base_url)
        self.model = model
        self.size = size
        self.name = f"openai-images:{model}"

    def render(self, prompt: str) -> RenderedImage:
        try:
            response = self._client.images.generate(model=self.model, prompt=prompt, size=self.size, n=1)
        except self._errors.APIError as exc:
            raise ProviderError(f"OpenAI image generation failed: {exc}") from None
        if not response.data or not response.data[0].b64_json:
            raise ProviderError("OpenAI returned no image data")
        try:
            data = base64.b64decode(response.data[0].b64_json, validate=True)
        except ValueError:
            raise ProviderError("OpenAI returned image data that is not base64") from None
        width, height = _png_size(data)
        usage = response.usage
        # The Images API names no model in its answer (a compatible server may): the one asked for, else.
        model = getattr(response, "model", None)
        return RenderedImage(
            data=data,
            width=width,
            height=height,
            provider="openai",
            model=model if isinstance(model, str) and model else self.model,
            input_tokens=(usage.input_tokens or 0) if usage else 0,
            output_tokens=(usage.output_tokens or 0) if usage else 0,
        )
