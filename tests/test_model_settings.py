"""Model settings (issue 12): a model and an output cap per task for OpenAI and Anthropic, any
OpenAI-compatible server at a base URL without a key, image modes, a price table, and completions that
say who answered (provider, the model the API reported, tokens) and which providers failed first.

OpenAI's requests are checked with respx against its documented shapes; Anthropic's SDK speaks httpx2,
which respx cannot patch, so its requests go through httpx2's MockTransport with the documented shapes.
The local-server tests use a real HTTP server on 127.0.0.1 (`tests/_model_server.py`), no respx.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import respx
from pydantic import ValidationError

from idea_expansion import ConfigurationError
from idea_expansion._settings import Settings
from idea_expansion.pipeline import AnthropicProvider, FallbackProvider, OfflineProvider, OpenAIProvider, ProviderError
from idea_expansion.pipeline.content import BlogDraft, ImageDraft, JudgeVerdict
from idea_expansion.pipeline.formats import render_title_card
from idea_expansion.pipeline.pricing import ModelPrice, PriceTable
from idea_expansion.pipeline.providers import (
    LOCAL_SERVER_KEY,
    MAX_OUTPUT_TOKENS,
    TASKS,
    Completion,
    IdeaBrief,
    OpenAIImageRenderer,
    RenderedImage,
    Task,
    token_parameter_for,
)
from idea_expansion.pipeline.setup import (
    image_mode_from_settings,
    image_renderer_from_settings,
    prices_from_settings,
    providers_from_settings,
)

from ._model_server import ModelServer, Refuse, task_of

IDEA = IdeaBrief("Explain regexes", "Paste a pattern, read it in words.", ("offline",), ())
OPENAI_CHAT = "https://api.openai.com/v1/chat/completions"
OPENAI_IMAGES = "https://api.openai.com/v1/images/generations"
VERDICT = {"score": 81, "reasoning": "Concrete and small."}

MODEL_SETTINGS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "IDEA_EXPANSION_PROVIDER",
    "IDEA_EXPANSION_OPENAI_MODEL",
    "IDEA_EXPANSION_OPENAI_MODELS",
    "IDEA_EXPANSION_OPENAI_TOKEN_PARAMETER",
    "IDEA_EXPANSION_ANTHROPIC_MODEL",
    "IDEA_EXPANSION_ANTHROPIC_MODELS",
    "IDEA_EXPANSION_IMAGE_MODE",
    "IDEA_EXPANSION_IMAGE_MODEL",
    "IDEA_EXPANSION_MODEL_TIMEOUT",
    "IDEA_EXPANSION_MODEL_MAX_RETRIES",
    "IDEA_EXPANSION_PRICES",
    "IDEA_EXPANSION_REVIEW_THRESHOLD",
)


@pytest.fixture(autouse=True)
def _no_model_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No model setting from the developer's environment or a `.env`."""
    for name in MODEL_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def openai_completion(content: dict[str, Any], *, model: str = "gpt-4o-mini-2024-07-18", usage: bool = True) -> Any:
    body: dict[str, Any] = {
        "id": "chatcmpl-9x",
        "object": "chat.completion",
        "created": 1764130000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": json.dumps(content), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 412, "completion_tokens": 58, "total_tokens": 470}
    return body


def anthropic_message(tool_input: dict[str, Any], *, model: str, stop_reason: str = "tool_use") -> Any:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "answer", "input": tool_input}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 380, "output_tokens": 44},
    }


def anthropic(handler: Callable[[httpx2.Request], httpx2.Response], **kw: Any) -> AnthropicProvider:
    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    return AnthropicProvider(api_key="sk-ant-test", http_client=client, max_retries=0, **kw)


# -- the contract's constants ----------------------------------------------------------------------------
def test_every_task_has_an_output_cap() -> None:
    assert set(MAX_OUTPUT_TOKENS) == set(TASKS)
    assert MAX_OUTPUT_TOKENS == {
        "judge": 400,
        "choose_format": 300,
        "plan": 1500,
        "blog_post": 4000,
        "twitter_thread": 1500,
        "github_repo": 16000,
        "image": 600,
        "review": 800,
    }


def test_completion_says_offline_only_when_told_and_fell_back_needs_errors() -> None:
    verdict = JudgeVerdict.model_validate(VERDICT)
    unknown = Completion(verdict, 0, 0, "my-model")  # a provider that does not say: the runner names it
    assert (unknown.provider, unknown.usage_reported, unknown.failed_calls) == ("", True, ())
    assert not Completion(verdict, 0, 0, "m", fallback_errors=("openai: boom",)).fell_back_to_offline
    offline = OfflineProvider().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert (offline.provider, offline.fallback_errors, offline.fell_back_to_offline) == ("offline", (), False)
    fell = Completion(verdict, 0, 0, "offline-templates", "offline", fallback_errors=("openai:gpt-4o-mini: boom",))
    assert fell.fell_back_to_offline
    answered = Completion(verdict, 1, 2, "claude", provider="anthropic", fallback_errors=("openai: boom",))
    assert not answered.fell_back_to_offline


# -- OpenAI: a model and a cap per task ------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_openai_sends_the_tasks_model_and_output_cap(task: Task) -> None:
    provider = OpenAIProvider(
        api_key="sk-test",
        http_client=httpx.Client(),
        max_retries=0,
        model="gpt-4o-mini",
        models={"github_repo": "gpt-4.1", "review": "o4-mini"},
    )
    with respx.mock(assert_all_called=True) as api:
        route = api.post(OPENAI_CHAT).mock(return_value=httpx.Response(200, json=openai_completion(VERDICT)))
        completion = provider.generate(task, JudgeVerdict, idea=IDEA, instructions="Score it.")
    body = json.loads(route.calls.last.request.content)
    assert body["model"] == {"github_repo": "gpt-4.1", "review": "o4-mini"}.get(task, "gpt-4o-mini")
    assert body["max_completion_tokens"] == MAX_OUTPUT_TOKENS[task]
    assert "max_tokens" not in body  # OpenAI's newer models refuse it
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-test"
    assert (completion.provider, completion.model) == ("openai", "gpt-4o-mini-2024-07-18")
    assert (completion.input_tokens, completion.output_tokens, completion.usage_reported) == (412, 58, True)


def test_openai_base_url_without_a_key_sends_the_placeholder_and_max_tokens() -> None:
    provider = OpenAIProvider(base_url="http://127.0.0.1:11434/v1", model="llama3.1", http_client=httpx.Client())
    with respx.mock(assert_all_called=True) as api:
        route = api.post("http://127.0.0.1:11434/v1/chat/completions").mock(
            return_value=httpx.Response(200, json=openai_completion(VERDICT, model="llama3.1:latest", usage=False))
        )
        completion = provider.generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {LOCAL_SERVER_KEY}"
    body = json.loads(request.content)
    assert body["model"] == "llama3.1"
    assert body["max_tokens"] == 400  # what Ollama and llama.cpp read
    assert "max_completion_tokens" not in body  # never both: some servers refuse that
    # No usage in the answer: 0 tokens, not reported, and still the model the server named.
    assert (completion.input_tokens, completion.output_tokens, completion.model) == (0, 0, "llama3.1:latest")
    assert not completion.usage_reported


def test_openai_needs_a_key_without_a_base_url() -> None:
    with pytest.raises(ConfigurationError, match="api_key"):
        OpenAIProvider()
    with pytest.raises(ConfigurationError, match="not a task"):
        OpenAIProvider(api_key="sk", models={"essay": "gpt-4.1"})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="not a task"):
        OpenAIProvider(api_key="sk", max_output_tokens={"judge": 0})


def test_openai_usage_missing_is_zero_tokens_with_the_model() -> None:
    provider = OpenAIProvider(api_key="sk-test", http_client=httpx.Client(), max_retries=0)
    with respx.mock() as api:
        api.post(OPENAI_CHAT).mock(return_value=httpx.Response(200, json=openai_completion(VERDICT, usage=False)))
        completion = provider.generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert (completion.tokens, completion.model, completion.provider) == (0, "gpt-4o-mini-2024-07-18", "openai")
    assert not completion.usage_reported  # 0 tokens because none were reported, not because none were spent


# -- OpenAI: the one parameter the output cap is sent in ------------------------------------------------
AZURE = "https://contoso-eastus.openai.azure.com/openai/v1"


@pytest.mark.parametrize(
    ("base_url", "setting", "sent"),
    [
        (None, "auto", "max_completion_tokens"),
        ("https://api.openai.com/v1", "auto", "max_completion_tokens"),
        ("https://API.OpenAI.com/v1/", "auto", "max_completion_tokens"),
        (AZURE, "auto", "max_completion_tokens"),
        ("http://127.0.0.1:11434/v1", "auto", "max_tokens"),
        ("https://openrouter.ai/api/v1", "auto", "max_tokens"),
        ("https://openai.azure.com.example.net/v1", "auto", "max_tokens"),  # not an Azure host
        ("https://eu.api.openai.com.example.net/v1", "auto", "max_tokens"),
        ("http://127.0.0.1:8000/v1", "max_completion_tokens", "max_completion_tokens"),
        (None, "max_tokens", "max_tokens"),
        (AZURE, "max_tokens", "max_tokens"),
    ],
)
def test_openai_sends_the_output_cap_in_exactly_one_parameter(base_url: str | None, setting: Any, sent: str) -> None:
    provider = OpenAIProvider(
        api_key="sk-test", base_url=base_url, token_parameter=setting, http_client=httpx.Client(), max_retries=0
    )
    assert provider.token_parameter == token_parameter_for(base_url, setting) == sent
    url = (base_url or "https://api.openai.com/v1").rstrip("/") + "/chat/completions"
    with respx.mock(assert_all_called=True) as api:
        route = api.post(url).mock(return_value=httpx.Response(200, json=openai_completion(VERDICT)))
        provider.generate("blog_post", JudgeVerdict, idea=IDEA, instructions="")
    body = json.loads(route.calls.last.request.content)
    assert {key: body[key] for key in ("max_tokens", "max_completion_tokens") if key in body} == {sent: 4000}


def test_an_unknown_token_parameter_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'both' is not one of auto"):
        OpenAIProvider(api_key="sk", token_parameter="both")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "server_takes", "sent"),
    [
        (None, "max_tokens", ("max_tokens",)),  # auto, at a local server
        ("auto", "max_tokens", ("max_tokens",)),
        ("max_completion_tokens", "max_completion_tokens", ("max_completion_tokens",)),
        ("max_tokens", "max_tokens", ("max_tokens",)),
    ],
)
def test_the_token_parameter_setting_reaches_a_real_server(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, server_takes: str, sent: tuple[str, ...]
) -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 3}
    # The server refuses the other parameter, as OpenAI does.
    with ModelServer(answer_by_task, usage=usage, token_parameter=server_takes) as server:
        monkeypatch.setenv("IDEA_EXPANSION_PROVIDER", "openai")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        if setting is not None:
            monkeypatch.setenv("IDEA_EXPANSION_OPENAI_TOKEN_PARAMETER", setting)
        settings = Settings()
        assert settings.openai_token_parameter == (setting or "auto")
        completion = providers_from_settings(settings).generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert completion.tokens == 12
    assert [request["token_cap"] for request in server.requests] == [sent]


def test_a_server_taking_only_max_completion_tokens_needs_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto sends max_tokens to a host it does not know; a server that refuses it says so, and the setting
    is the way out."""
    with ModelServer(answer_by_task, token_parameter="max_completion_tokens") as server:
        monkeypatch.setenv("IDEA_EXPANSION_PROVIDER", "openai")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        with pytest.raises(ProviderError, match="Unsupported parameter: 'max_tokens'") as caught:
            providers_from_settings(Settings()).generate("judge", JudgeVerdict, idea=IDEA, instructions="")
        assert caught.value.failed_calls[0].usage_reported is False  # an HTTP error: nothing known spent
        monkeypatch.setenv("IDEA_EXPANSION_OPENAI_TOKEN_PARAMETER", "max_completion_tokens")
        providers_from_settings(Settings()).generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert [request["token_cap"] for request in server.requests] == [("max_tokens",), ("max_completion_tokens",)]


# -- Anthropic: a model and max_tokens per task ---------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_anthropic_sends_the_tasks_model_and_max_tokens(task: Task) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append(body)
        return httpx2.Response(200, json=anthropic_message(VERDICT, model=body["model"] + "-20251001"))

    provider = anthropic(handler, model="claude-haiku-4-5", models={"github_repo": "claude-sonnet-4-6"})
    completion = provider.generate(task, JudgeVerdict, idea=IDEA, instructions="")
    expected = "claude-sonnet-4-6" if task == "github_repo" else "claude-haiku-4-5"
    assert seen[0]["model"] == expected
    assert seen[0]["max_tokens"] == MAX_OUTPUT_TOKENS[task]  # no longer a fixed 4096
    assert (completion.provider, completion.model) == ("anthropic", expected + "-20251001")
    assert (completion.input_tokens, completion.output_tokens) == (380, 44)


def test_anthropic_cut_off_at_max_tokens_is_a_provider_error() -> None:
    message = anthropic_message({"score": 5}, model="claude-haiku-4-5", stop_reason="max_tokens")
    provider = anthropic(lambda _: httpx2.Response(200, json=message))
    with pytest.raises(ProviderError, match=r"stopped at max_tokens \(16000\)"):
        provider.generate("github_repo", JudgeVerdict, idea=IDEA, instructions="")


def test_anthropic_base_url_without_a_key() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=anthropic_message(VERDICT, model="local-claude"))

    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    provider = AnthropicProvider(base_url="http://127.0.0.1:4000", http_client=client, max_retries=0)
    assert provider.generate("judge", JudgeVerdict, idea=IDEA, instructions="").model == "local-claude"
    assert str(seen[0].url) == "http://127.0.0.1:4000/v1/messages"
    with pytest.raises(ConfigurationError, match="api_key"):
        AnthropicProvider()


# -- the fallback chain says who failed -----------------------------------------------------------------
def failing_openai(api: respx.MockRouter) -> OpenAIProvider:
    api.post(OPENAI_CHAT).mock(
        return_value=httpx.Response(
            401,
            json={
                "error": {
                    "message": "Incorrect API key provided",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
    )
    return OpenAIProvider(api_key="sk-bad", http_client=httpx.Client(), max_retries=0)


def test_fallback_errors_name_the_providers_that_failed_first() -> None:
    answering = anthropic(lambda _: httpx2.Response(200, json=anthropic_message(VERDICT, model="claude-haiku-4-5")))
    with respx.mock() as api:
        openai = failing_openai(api)
        to_anthropic = FallbackProvider([openai, answering]).generate("judge", JudgeVerdict, idea=IDEA, instructions="")
        to_offline = FallbackProvider([openai, OfflineProvider()]).generate(
            "blog_post", BlogDraft, idea=IDEA, instructions=""
        )
    assert to_anthropic.provider == "anthropic"
    assert len(to_anthropic.fallback_errors) == 1
    assert to_anthropic.fallback_errors[0].startswith("openai:gpt-4o-mini: OpenAI request failed")
    assert "Incorrect API key" in to_anthropic.fallback_errors[0]
    assert not to_anthropic.fell_back_to_offline  # a model answered: not the templates
    assert (to_offline.provider, to_offline.model) == ("offline", "offline-templates")
    assert to_offline.fell_back_to_offline
    first = FallbackProvider([answering, OfflineProvider()]).generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert (first.provider, first.fallback_errors) == ("anthropic", ())


# -- images ----------------------------------------------------------------------------------------------
def images_body(png: bytes) -> dict[str, Any]:
    return {
        "created": 1764130000,
        "background": "opaque",
        "data": [{"b64_json": base64.b64encode(png).decode()}],
        "output_format": "png",
        "quality": "medium",
        "size": "1536x1024",
        "usage": {
            "total_tokens": 4204,
            "input_tokens": 44,
            "output_tokens": 4160,
            "input_tokens_details": {"text_tokens": 44, "image_tokens": 0},
        },
    }


def test_openai_image_renderer_returns_a_rendered_image_with_model_and_tokens() -> None:
    png = render_title_card("Poster", "caption", width=320, height=200)
    renderer = OpenAIImageRenderer(api_key="sk-images", model="gpt-image-1-mini", http_client=httpx.Client())
    with respx.mock(assert_all_called=True) as api:
        route = api.post(OPENAI_IMAGES).mock(return_value=httpx.Response(200, json=images_body(png)))
        image = renderer.render("A poster for the spring meetup")
    # The Images API names no model: the one asked for. The size is the PNG's own, not the one asked for.
    assert image == RenderedImage(png, 320, 200, "openai", "gpt-image-1-mini", input_tokens=44, output_tokens=4160)
    assert json.loads(route.calls.last.request.content) == {
        "model": "gpt-image-1-mini",
        "prompt": "A poster for the spring meetup",
        "size": "1536x1024",
        "n": 1,
    }
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-images"


def test_image_mode_model_renders_drafts_through_the_configured_server(monkeypatch: pytest.MonkeyPatch) -> None:
    png = render_title_card("Poster", "caption", width=96, height=64)
    usage = {"total_tokens": 4204, "input_tokens": 44, "output_tokens": 4160}
    with ModelServer(answer_by_task, model="gpt-image-1-2025-04-15", image=png, image_usage=usage) as server:
        monkeypatch.setenv("IDEA_EXPANSION_IMAGE_MODE", "model")
        monkeypatch.setenv("IDEA_EXPANSION_IMAGE_MODEL", "gpt-image-1")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        renderer = image_renderer_from_settings(Settings())
        assert renderer is not None
        draft = ImageDraft(prompt="A poster for the spring meetup", caption="Spring meetup", headline="Meetup")
        image = renderer(draft)
    assert image == RenderedImage(png, 96, 64, "openai", "gpt-image-1-2025-04-15", input_tokens=44, output_tokens=4160)
    assert server.requests[0]["path"] == "/v1/images/generations"
    assert server.requests[0]["body"] == {
        "model": "gpt-image-1",
        "prompt": "A poster for the spring meetup",
        "size": "1536x1024",
        "n": 1,
    }


def test_image_renderer_refuses_what_is_not_a_png() -> None:
    body = images_body(b"GIF89a" + b"\0" * 40)
    with respx.mock() as api:
        api.post(OPENAI_IMAGES).mock(return_value=httpx.Response(200, json=body))
        with pytest.raises(ProviderError, match="not a PNG"):
            OpenAIImageRenderer(api_key="sk", http_client=httpx.Client(), max_retries=0).render("x")


@pytest.mark.parametrize(("mode", "renders"), [(None, False), ("card", False), ("none", False), ("model", True)])
def test_image_modes(monkeypatch: pytest.MonkeyPatch, mode: str | None, renders: bool) -> None:
    monkeypatch.setenv("IDEA_EXPANSION_PROVIDER", "openai")  # openai in the chain no longer turns images on
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    if mode is not None:
        monkeypatch.setenv("IDEA_EXPANSION_IMAGE_MODE", mode)
    settings = Settings()
    assert image_mode_from_settings(settings) == (mode or "card")
    assert (image_renderer_from_settings(settings) is not None) is renders


def test_image_mode_model_needs_a_key_or_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDEA_EXPANSION_IMAGE_MODE", "model")
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY is not set"):
        image_renderer_from_settings(Settings())
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    assert image_renderer_from_settings(Settings()) is not None


# -- prices ----------------------------------------------------------------------------------------------
PRICES = {
    "gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6},
    "claude-haiku-4-5": {"input_per_million": "1", "output_per_million": "5"},
    "llama3.1": {"input_per_million": 0, "output_per_million": 0},
}


def test_price_table_costs_exactly() -> None:
    table = PriceTable.from_mapping(PRICES)
    # 412 x 0.15 + 58 x 0.60 = 96.6 micro-dollars: exact decimals, no float residue.
    assert table.cost("gpt-4o-mini", 412, 58) == Decimal("0.0000966")
    assert table.cost("gpt-4o-mini-2024-07-18", 412, 58) == Decimal("0.0000966")  # a dated snapshot
    assert table.cost("claude-haiku-4-5-20251001", 380, 44) == Decimal("0.00060")
    assert table.cost("claude-haiku-4-5", 1_000_000, 1_000_000) == Decimal(6)
    assert table.cost("llama3.1", 5000, 5000) == 0
    assert table.cost("gpt-4o", 1, 1) is None  # unpriced: no cost rather than a wrong one
    assert table.cost("gpt-4o-mini-tts", 1, 1) is None  # only a date suffix is dropped
    assert table.price("gpt-4o-mini") == ModelPrice(Decimal("0.15"), Decimal("0.6"))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"m": {"input_per_million": -1, "output_per_million": 1}}, "from 0 to"),
        ({"m": {"input_per_million": 1, "output_per_million": "NaN"}}, "from 0 to"),
        ({"m": {"input_per_million": 1, "output_per_million": 1e9}}, "from 0 to"),
        ({"m": {"input_per_million": True, "output_per_million": 1}}, "must be a number"),
        ({"m": {"input_per_million": "cheap", "output_per_million": 1}}, "must be a number"),
        ({"m": {"input_per_million": 1, "output_per_million": 1, "cached_per_million": 1}}, "unknown key"),
        ({"m": {"input": 1, "output_per_million": 1}}, "unknown key"),
        ({"m": {"input_per_million": 1}}, "lacks output_per_million"),
        ({"m": 0.15}, "must be"),
        ({" ": {"input_per_million": 1, "output_per_million": 1}}, "model name"),
    ],
)
def test_price_table_refuses_bad_input(raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match="IDEA_EXPANSION_PRICES") as caught:
        PriceTable.from_mapping(raw)
    assert fragment in str(caught.value)


def test_prices_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert prices_from_settings(Settings()) is None  # no table: no cost recorded
    monkeypatch.setenv("IDEA_EXPANSION_PRICES", json.dumps(PRICES))
    table = prices_from_settings(Settings())
    assert table is not None
    assert table.cost("gpt-4o-mini", 1_000_000, 0) == Decimal("0.15")
    monkeypatch.setenv("IDEA_EXPANSION_PRICES", '{"gpt-4o-mini": {"input_per_million": 0.15, "output": 1}}')
    with pytest.raises(ConfigurationError, match="IDEA_EXPANSION_PRICES: 'gpt-4o-mini' has unknown key"):
        prices_from_settings(Settings())


# -- settings, from the environment and from .env ------------------------------------------------------
def test_settings_defaults() -> None:
    settings = Settings()
    assert (settings.openai_model, settings.anthropic_model, settings.image_model) == (
        "gpt-4o-mini",
        "claude-haiku-4-5",
        "gpt-image-1",
    )
    assert (settings.openai_models, settings.anthropic_models, settings.prices) == ({}, {}, {})
    assert (settings.openai_base_url, settings.anthropic_base_url) == (None, None)
    assert (settings.image_mode, settings.review_threshold) == ("card", 70)
    assert (settings.model_timeout, settings.model_max_retries) == (60.0, 2)
    assert settings.openai_token_parameter == "auto"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "IDEA_EXPANSION_PROVIDER": "openai,anthropic,offline",
        "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
        "IDEA_EXPANSION_OPENAI_MODEL": "llama3.1",
        "IDEA_EXPANSION_OPENAI_MODELS": '{"github_repo": "qwen2.5-coder:7b"}',
        "ANTHROPIC_API_KEY": "sk-ant",
        "IDEA_EXPANSION_ANTHROPIC_MODEL": "claude-sonnet-4-6",
        "IDEA_EXPANSION_ANTHROPIC_MODELS": '{"judge": "claude-haiku-4-5"}',
        "IDEA_EXPANSION_MODEL_TIMEOUT": "90",
        "IDEA_EXPANSION_MODEL_MAX_RETRIES": "0",
        "IDEA_EXPANSION_REVIEW_THRESHOLD": "85",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.openai_models == {"github_repo": "qwen2.5-coder:7b"}
    assert (settings.model_timeout, settings.model_max_retries, settings.review_threshold) == (90.0, 0, 85)
    chain = providers_from_settings(settings)
    assert isinstance(chain, FallbackProvider)
    openai, anthropic_, offline = chain.providers
    assert isinstance(openai, OpenAIProvider)
    assert isinstance(anthropic_, AnthropicProvider)
    assert isinstance(offline, OfflineProvider)
    assert openai.base_url == "http://127.0.0.1:11434/v1"  # and no OPENAI_API_KEY needed
    assert openai.token_parameter == "max_tokens"  # auto, at a local server
    assert (openai.model_for("judge"), openai.model_for("github_repo")) == ("llama3.1", "qwen2.5-coder:7b")
    assert (anthropic_.model_for("judge"), anthropic_.model_for("blog_post")) == (
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
    )
    assert openai.timeout == anthropic_.timeout == 90.0


def test_settings_from_a_dotenv_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "OPENAI_BASE_URL=http://127.0.0.1:8000/v1\n"
        "IDEA_EXPANSION_PROVIDER=openai\n"
        "IDEA_EXPANSION_OPENAI_MODEL=Qwen/Qwen2.5-7B-Instruct\n"
        'IDEA_EXPANSION_OPENAI_MODELS={"review": "meta-llama/Llama-3.1-8B-Instruct"}\n'
        "IDEA_EXPANSION_IMAGE_MODE=none\n"
        'IDEA_EXPANSION_PRICES={"Qwen/Qwen2.5-7B-Instruct": {"input_per_million": 0, "output_per_million": 0}}\n'
        "IDEA_EXPANSION_REVIEW_THRESHOLD=60\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    provider = providers_from_settings(settings)
    assert isinstance(provider, OpenAIProvider)
    assert provider.base_url == "http://127.0.0.1:8000/v1"
    assert provider.model_for("plan") == "Qwen/Qwen2.5-7B-Instruct"
    assert provider.model_for("review") == "meta-llama/Llama-3.1-8B-Instruct"
    assert image_mode_from_settings(settings) == "none"
    assert image_renderer_from_settings(settings) is None
    table = prices_from_settings(settings)
    assert table is not None
    assert table.cost("Qwen/Qwen2.5-7B-Instruct", 10, 10) == 0
    assert settings.review_threshold == 60


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("IDEA_EXPANSION_OPENAI_MODELS", '{"essay": "gpt-4.1"}', "Input should be 'judge'"),
        ("IDEA_EXPANSION_OPENAI_MODELS", "gpt-4.1", "Invalid JSON"),
        ("IDEA_EXPANSION_OPENAI_MODELS", '{"judge": "  "}', "at least 1 character"),
        ("IDEA_EXPANSION_ANTHROPIC_MODELS", '{"blog": "claude-sonnet-4-6"}', "Input should be 'judge'"),
        ("IDEA_EXPANSION_ANTHROPIC_MODELS", '["claude-sonnet-4-6"]', "valid dictionary"),
        ("IDEA_EXPANSION_IMAGE_MODE", "always", "'none', 'card' or 'model'"),
        ("IDEA_EXPANSION_REVIEW_THRESHOLD", "101", "less than or equal to 100"),
        ("IDEA_EXPANSION_REVIEW_THRESHOLD", "-1", "greater than or equal to 0"),
        ("IDEA_EXPANSION_MODEL_TIMEOUT", "0", "greater than 0"),
        ("IDEA_EXPANSION_MODEL_MAX_RETRIES", "many", "valid integer"),
        ("IDEA_EXPANSION_PRICES", "cheap", "Invalid JSON"),
        ("OPENAI_BASE_URL", "127.0.0.1:11434/v1", "http:// or https:// URL"),
        ("ANTHROPIC_BASE_URL", "file:///etc/passwd", "http:// or https:// URL"),
        ("IDEA_EXPANSION_OPENAI_MODEL", " ", "at least 1 character"),
        ("IDEA_EXPANSION_OPENAI_TOKEN_PARAMETER", "both", "'auto', 'max_completion_tokens' or 'max_tokens'"),
    ],
)
def test_malformed_model_settings_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    assert name in message
    assert fragment in message


def test_unknown_provider_and_missing_keys_are_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDEA_EXPANSION_PROVIDER", "openai,llama")
    monkeypatch.setenv("OPENAI_API_KEY", "sk")
    with pytest.raises(ConfigurationError, match="unknown provider 'llama'"):
        providers_from_settings(Settings())
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("IDEA_EXPANSION_PROVIDER", "openai")
    with pytest.raises(ConfigurationError, match=r"OPENAI_API_KEY is not set.*OPENAI_BASE_URL"):
        providers_from_settings(Settings())
    monkeypatch.setenv("IDEA_EXPANSION_PROVIDER", "anthropic")
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY is not set"):
        providers_from_settings(Settings())
    with pytest.raises(ConfigurationError, match="settings must be a Settings"):
        image_mode_from_settings({"image_mode": "model"})  # type: ignore[arg-type]


def test_settings_in_code_take_mappings() -> None:
    settings = Settings(
        IDEA_EXPANSION_OPENAI_MODELS={"judge": "gpt-4.1-nano"},  # type: ignore[call-arg]
        IDEA_EXPANSION_PRICES={"gpt-4.1-nano": {"input_per_million": Decimal("0.1"), "output_per_million": 0.4}},
    )
    assert settings.openai_models == {"judge": "gpt-4.1-nano"}
    table = prices_from_settings(settings)
    assert table is not None
    assert table.cost("gpt-4.1-nano", 10, 10) == Decimal("0.000005")


# -- a real OpenAI-compatible server on 127.0.0.1 (no respx) ----------------------------------------------
def answer_by_task(task: str, request: dict[str, Any]) -> dict[str, Any]:
    assert request["response_format"]["type"] == "json_schema"
    if task == "judge":
        return {"score": 77, "reasoning": f"Judged by the stub ({request['model']})."}
    raise Refuse(400, f"this stub does not do {task}")


def test_a_local_openai_compatible_server_gives_model_and_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    usage = {"prompt_tokens": 321, "completion_tokens": 45}
    with ModelServer(answer_by_task, model="llama3.1:8b-instruct-q4_K_M", usage=usage) as server:
        monkeypatch.setenv("IDEA_EXPANSION_PROVIDER", "openai")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("IDEA_EXPANSION_OPENAI_MODEL", "llama3.1")
        provider = providers_from_settings(Settings())  # no OPENAI_API_KEY
        completion = provider.generate("judge", JudgeVerdict, idea=IDEA, instructions="Score it.")
        assert completion.value == JudgeVerdict(score=77, reasoning="Judged by the stub (llama3.1).")
        assert (completion.provider, completion.model) == ("openai", "llama3.1:8b-instruct-q4_K_M")
        assert (completion.input_tokens, completion.output_tokens) == (321, 45)
        # A server that refuses the request (as some refuse json_schema) is a ProviderError.
        with pytest.raises(ProviderError, match="this stub does not do blog_post"):
            provider.generate("blog_post", BlogDraft, idea=IDEA, instructions="")
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {LOCAL_SERVER_KEY}"
    assert task_of(request["body"]) == "judge"
    assert request["body"]["max_tokens"] == 400
    assert request["token_cap"] == ("max_tokens",)  # exactly one of the two


def test_a_local_server_without_usage_and_its_images() -> None:
    png = render_title_card("Local", "image", width=64, height=48)
    image_usage = {"total_tokens": 7, "input_tokens": 3, "output_tokens": 4}
    with ModelServer(answer_by_task, model="stub-model", usage=None, image=png, image_usage=image_usage) as server:
        provider = OpenAIProvider(base_url=server.base_url, model="whatever", max_retries=0)
        completion = provider.generate("judge", JudgeVerdict, idea=IDEA, instructions="")
        image = OpenAIImageRenderer(base_url=server.base_url, model="sd-turbo", max_retries=0).render("a cat")
    assert (completion.tokens, completion.model) == (0, "stub-model")  # no usage: 0 tokens, the model recorded
    assert image == RenderedImage(png, 64, 48, "openai", "stub-model", input_tokens=3, output_tokens=4)
