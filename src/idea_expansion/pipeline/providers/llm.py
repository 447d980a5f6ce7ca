"""OpenAI and Anthropic providers, through their official SDKs (the optional `llm` extra).

Both SDKs already retry 408/409/429/5xx with exponential backoff (honouring Retry-After); we bound it
with `max_retries` and a timeout, then validate the answer against the pydantic schema.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .base import Completion, IdeaBrief, ProviderError, Task

__all__ = ["AnthropicProvider", "OpenAIImageRenderer", "OpenAIProvider"]

T = TypeVar("T", bound=BaseModel)

SYSTEM = (
    "You expand a person's raw idea into finished content. Work only from the idea you are given; "
    "do not invent facts, links or quotes. Answer with the requested structure only."
)


def _user_message(task: Task, idea: IdeaBrief, instructions: str) -> str:
    return f"Task: {task}\n{instructions}\n\nThe idea:\n{idea.as_prompt()}"


def _openai(api_key: str, timeout: float, max_retries: int, http_client: Any, base_url: str | None) -> tuple[Any, Any]:
    """(the `openai` module, a client): the module's APIError is what failures raise."""
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ProviderError("OpenAI needs: pip install 'idea-expansion[llm]'") from exc
    client = openai.OpenAI(
        api_key=api_key, timeout=timeout, max_retries=max_retries, http_client=http_client, base_url=base_url
    )
    return openai, client


def _validated(schema: type[T], data: Any, provider: str) -> T:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ProviderError(f"{provider} returned output that does not fit {schema.__name__}: {exc}") from None


class OpenAIProvider:
    """Chat Completions with a JSON-schema response format."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "gpt-4o-mini",
        timeout: float = 60.0,
        max_retries: int = 3,
        http_client: Any = None,
        base_url: str | None = None,
    ) -> None:
        # http_client: an httpx.Client (the OpenAI SDK accepts it alongside its own httpx2 clients).
        self._errors, self._client = _openai(api_key, timeout, max_retries, http_client, base_url)
        self.model = model
        self.name = f"openai:{model}"

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": _user_message(task, idea, instructions)},
                ],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
                },
            )
        except self._errors.APIError as exc:
            raise ProviderError(f"OpenAI request failed: {exc}") from None
        choice = response.choices[0]
        if choice.finish_reason != "stop" or not choice.message.content:
            raise ProviderError(f"OpenAI stopped early ({choice.finish_reason}) without a complete answer")
        try:
            data = json.loads(choice.message.content)
        except json.JSONDecodeError as exc:
            raise ProviderError(f"OpenAI returned invalid JSON: {exc}") from None
        usage = response.usage
        return Completion(
            _validated(schema, data, "OpenAI"),
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            response.model,
        )


class AnthropicProvider:
    """Messages API with one forced tool whose input schema is the pydantic schema."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "claude-haiku-4-5",
        timeout: float = 60.0,
        max_retries: int = 3,
        max_tokens: int = 4096,
        http_client: Any = None,
        base_url: str | None = None,
    ) -> None:
        try:
            import anthropic
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ProviderError("the Anthropic provider needs: pip install 'idea-expansion[llm]'") from exc
        self._errors = anthropic
        self._client = anthropic.Anthropic(
            api_key=api_key, timeout=timeout, max_retries=max_retries, http_client=http_client, base_url=base_url
        )
        self.model = model
        self.max_tokens = max_tokens
        self.name = f"anthropic:{model}"

    def generate(self, task: Task, schema: type[T], *, idea: IdeaBrief, instructions: str) -> Completion[T]:
        tool = {
            "name": "answer",
            "description": f"Return the {schema.__name__}.",
            "input_schema": schema.model_json_schema(),
        }
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": _user_message(task, idea, instructions)}],
            "tools": [tool],
            "tool_choice": {"type": "tool", "name": "answer"},
        }
        try:
            response = self._client.messages.create(**request)
        except self._errors.APIError as exc:
            raise ProviderError(f"Anthropic request failed: {exc}") from None
        for block in response.content:
            if block.type == "tool_use" and block.name == "answer":
                return Completion(
                    _validated(schema, block.input, "Anthropic"),
                    response.usage.input_tokens,
                    response.usage.output_tokens,
                    response.model,
                )
        raise ProviderError(f"Anthropic answered without the structured result (stop reason {response.stop_reason})")


class OpenAIImageRenderer:
    """Images from OpenAI's Images API (base64 PNG), used instead of the offline title card when the
    OpenAI provider is configured. Returns (png bytes, width, height, tokens)."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "gpt-image-1",
        size: str = "1536x1024",
        timeout: float = 120.0,
        max_retries: int = 3,
        http_client: Any = None,
        base_url: str | None = None,
    ) -> None:
        self._errors, self._client = _openai(api_key, timeout, max_retries, http_client, base_url)
        self.model = model
        self.size = size
        self.name = f"openai-images:{model}"

    def render(self, prompt: str) -> tuple[bytes, int, int, int]:
        import base64

        try:
            response = self._client.images.generate(model=self.model, prompt=prompt, size=self.size, n=1)
        except self._errors.APIError as exc:
            raise ProviderError(f"OpenAI image generation failed: {exc}") from None
        if not response.data or not response.data[0].b64_json:
            raise ProviderError("OpenAI returned no image data")
        data = base64.b64decode(response.data[0].b64_json)
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ProviderError("OpenAI returned something that is not a PNG")
        width, height = (int(v) for v in self.size.split("x"))
        tokens = response.usage.total_tokens if response.usage else 0
        return data, width, height, tokens
