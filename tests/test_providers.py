"""OpenAI and Anthropic providers against their documented response shapes: structured output in,
validated model and token usage out, bounded retries on 429/5xx, errors, and the fallback order.

OpenAI's SDK accepts an httpx client, so respx intercepts it. Anthropic's SDK only speaks httpx2,
which respx cannot patch; its tests use httpx2's own MockTransport with the same recorded shapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import httpx2
import pytest
import respx

from idea_expansion.pipeline import AnthropicProvider, FallbackProvider, OfflineProvider, OpenAIProvider, ProviderError
from idea_expansion.pipeline.content import BlogDraft, JudgeVerdict
from idea_expansion.pipeline.providers import IdeaBrief, RenderedImage

IDEA = IdeaBrief("Explain regexes", "Paste a pattern, read it in words.", ("offline",), ())
OPENAI_URL = "https://api.openai.com/v1/chat/completions"


def openai_completion(content: str, *, finish_reason: str = "stop") -> dict[str, object]:
    return {
        "id": "chatcmpl-9x",
        "object": "chat.completion",
        "created": 1764130000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 412, "completion_tokens": 58, "total_tokens": 470},
    }


def openai() -> OpenAIProvider:
    return OpenAIProvider(api_key="sk-test", http_client=httpx.Client(), max_retries=2)


def test_openai_structured_output_and_usage() -> None:
    with respx.mock(assert_all_called=True) as api:
        route = api.post(OPENAI_URL).mock(
            return_value=httpx.Response(
                200, json=openai_completion('{"score": 81, "reasoning": "Concrete and small."}')
            )
        )
        completion = openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="Score it.")
    assert completion.value == JudgeVerdict(score=81, reasoning="Concrete and small.")
    assert (completion.input_tokens, completion.output_tokens, completion.tokens) == (412, 58, 470)
    assert (completion.provider, completion.model) == ("openai", "gpt-4o-mini-2024-07-18")  # what the API said
    request = route.calls.last.request
    body = json.loads(request.content)
    assert request.headers["authorization"] == "Bearer sk-test"
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "JudgeVerdict"
    assert body["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"] == 100
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "Explain regexes" in body["messages"][1]["content"]


def test_openai_retries_429_then_succeeds() -> None:
    rate_limited = httpx.Response(
        429,
        headers={"retry-after-ms": "1"},
        json={
            "error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
        },
    )
    ok = httpx.Response(200, json=openai_completion('{"score": 5, "reasoning": "Thin."}'))
    with respx.mock() as api:
        route = api.post(OPENAI_URL).mock(side_effect=[rate_limited, ok])
        assert openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="").value.score == 5
    assert route.call_count == 2


def test_openai_gives_up_after_bounded_retries() -> None:
    error = httpx.Response(
        500, headers={"retry-after-ms": "1"}, json={"error": {"message": "boom", "type": "server_error"}}
    )
    with respx.mock() as api:
        route = api.post(OPENAI_URL).mock(return_value=error)
        with pytest.raises(ProviderError, match="OpenAI request failed"):
            openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert route.call_count == 3  # the first try and two retries


@pytest.mark.parametrize(
    ("content", "finish", "fragment"),
    [
        ('{"score": 150, "reasoning": "x"}', "stop", "does not fit JudgeVerdict"),
        ("not json", "stop", "invalid JSON"),
        ('{"score": 1', "length", "stopped early"),
    ],
)
def test_openai_bad_answers_are_provider_errors(content: str, finish: str, fragment: str) -> None:
    with respx.mock() as api:
        api.post(OPENAI_URL).mock(
            return_value=httpx.Response(200, json=openai_completion(content, finish_reason=finish))
        )
        with pytest.raises(ProviderError, match=fragment):
            openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="")


def test_openai_401_is_not_retried() -> None:
    with respx.mock() as api:
        route = api.post(OPENAI_URL).mock(
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
        with pytest.raises(ProviderError, match="Incorrect API key"):
            openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert route.call_count == 1


# -- Anthropic ------------------------------------------------------------------------------------------
def anthropic_message(tool_input: dict[str, object]) -> dict[str, object]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "answer", "input": tool_input}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 380, "output_tokens": 44},
    }


def anthropic(handler: Callable[[httpx2.Request], httpx2.Response], **kw: object) -> AnthropicProvider:
    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    return AnthropicProvider(api_key="sk-ant-test", http_client=client, max_retries=2, **kw)  # type: ignore[arg-type]


def test_anthropic_forced_tool_and_usage() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=anthropic_message({"score": 64, "reasoning": "Worth a post."}))

    completion = anthropic(handler).generate("judge", JudgeVerdict, idea=IDEA, instructions="Score it.")
    assert completion.value.score == 64
    assert (completion.input_tokens, completion.output_tokens) == (380, 44)
    request = seen[0]
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    assert (
        request.headers["authorization"] == "Bearer sk-ant-test"
    )  # this SDK version authenticates with a bearer token
    assert request.headers["anthropic-version"]
    body = json.loads(request.content)
    assert body["tool_choice"] == {"type": "tool", "name": "answer"}
    assert body["tools"][0]["input_schema"]["title"] == "JudgeVerdict"
    assert body["model"] == "claude-haiku-4-5"


def test_anthropic_retries_overloaded_then_succeeds() -> None:
    answers = [
        httpx2.Response(
            529,
            headers={"retry-after-ms": "1"},
            json={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
        httpx2.Response(200, json=anthropic_message({"score": 10, "reasoning": "Vague."})),
    ]
    assert (
        anthropic(lambda _: answers.pop(0)).generate("judge", JudgeVerdict, idea=IDEA, instructions="").value.score
        == 10
    )
    assert answers == []


def test_anthropic_answer_without_the_tool_is_an_error() -> None:
    message = anthropic_message({}) | {
        "content": [{"type": "text", "text": "I'd rather chat."}],
        "stop_reason": "end_turn",
    }
    with pytest.raises(ProviderError, match="without the structured result"):
        anthropic(lambda _: httpx2.Response(200, json=message)).generate(
            "judge", JudgeVerdict, idea=IDEA, instructions=""
        )


def test_fallback_uses_the_next_provider_and_names_every_failure() -> None:
    failing = anthropic(
        lambda _: httpx2.Response(
            400, json={"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
        )
    )
    chain = FallbackProvider([failing, OfflineProvider()])
    completion = chain.generate("blog_post", BlogDraft, idea=IDEA, instructions="")
    assert (completion.model, completion.provider) == ("offline-templates", "offline")
    assert completion.fell_back_to_offline
    assert len(completion.fallback_errors) == 1
    assert completion.fallback_errors[0].startswith("anthropic:claude-haiku-4-5: Anthropic request failed")
    with pytest.raises(ProviderError, match=r"every provider failed.*anthropic:claude-haiku-4-5.*bad"):
        FallbackProvider([failing]).generate("judge", JudgeVerdict, idea=IDEA, instructions="")


def test_openai_images_render_a_real_png() -> None:
    import base64

    from idea_expansion.pipeline.formats import render_title_card
    from idea_expansion.pipeline.providers import OpenAIImageRenderer

    png = render_title_card("Poster", "caption")
    body = {
        "created": 1764130000,
        "data": [{"b64_json": base64.b64encode(png).decode()}],
        "usage": {
            "total_tokens": 4204,
            "input_tokens": 44,
            "output_tokens": 4160,
            "input_tokens_details": {"text_tokens": 44, "image_tokens": 0},
        },
    }
    with respx.mock() as api:
        route = api.post("https://api.openai.com/v1/images/generations").mock(
            return_value=httpx.Response(200, json=body)
        )
        renderer = OpenAIImageRenderer(api_key="sk-test", http_client=httpx.Client(), max_retries=0)
        image = renderer.render("A poster for the spring meetup")
    # The size is the PNG's own (this one is a 1200x630 card), not the size asked for.
    assert image == RenderedImage(png, 1200, 630, "openai", "gpt-image-1", input_tokens=44, output_tokens=4160)
    assert json.loads(route.calls.last.request.content) == {
        "model": "gpt-image-1",
        "prompt": "A poster for the spring meetup",
        "size": "1536x1024",
        "n": 1,
    }
    with respx.mock() as api:
        api.post("https://api.openai.com/v1/images/generations").mock(
            return_value=httpx.Response(200, json=body | {"data": [{"b64_json": base64.b64encode(b"GIF89a").decode()}]})
        )
        with pytest.raises(ProviderError, match="not a PNG"):
            OpenAIImageRenderer(api_key="sk-test", http_client=httpx.Client(), max_retries=0).render("x")
