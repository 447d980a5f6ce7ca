"""OpenAI and Anthropic providers against their documented response shapes: structured output in,
validated model and token usage out, bounded retries on 429/5xx, errors, and the fallback order. A failed
call is a `ProviderError` carrying a `FailedCall` with the tokens it spent (when the API answered at all),
and a fallback chain carries the failed calls of every provider it tried. (The image renderer's tests are
in test_model_settings.py.)

OpenAI's SDK accepts an httpx client, so respx intercepts it. Anthropic's SDK only speaks httpx2,
which respx cannot patch; its tests use httpx2's own MockTransport with the same recorded shapes.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import pytest
import respx

from idea_expansion.pipeline import AnthropicProvider, FallbackProvider, OfflineProvider, OpenAIProvider, ProviderError
from idea_expansion.pipeline.content import BlogDraft, JudgeVerdict
from idea_expansion.pipeline.providers import Completion, FailedCall, IdeaBrief, Task

IDEA = IdeaBrief("Explain regexes", "Paste a pattern, read it in words.", ("offline",), ())
OPENAI_URL = "https://api.openai.com/v1/chat/completions"


def openai_completion(content: str | None, *, finish_reason: str | None = "stop") -> dict[str, object]:
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


def openai(max_retries: int = 2) -> OpenAIProvider:
    return OpenAIProvider(api_key="sk-test", http_client=httpx.Client(), max_retries=max_retries)


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


def anthropic(handler: Callable[[httpx2.Request], httpx2.Response], *, max_retries: int = 2) -> AnthropicProvider:
    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    return AnthropicProvider(api_key="sk-ant-test", http_client=client, max_retries=max_retries)


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


# -- a failed call carries what it spent ---------------------------------------------------------------
OPENAI_SPENT = FailedCall("openai", "gpt-4o-mini-2024-07-18", 412, 58, "", usage_reported=True)
"""What a failed call of `openai_completion` spent (the error aside): its usage, as the API reported it."""


def spent(call: FailedCall) -> FailedCall:
    """The call without its error text, to compare with OPENAI_SPENT and friends."""
    return FailedCall(call.provider, call.model, call.input_tokens, call.output_tokens, "", call.usage_reported)


@pytest.mark.parametrize(
    ("content", "finish", "fragment"),
    [
        ('{"score": 1', "length", r"stopped early \(length\)"),
        ('{"score": 1, "reasoning": "x"}', "content_filter", r"stopped early \(content_filter\)"),
        ("not json", "stop", "invalid JSON"),
        ('{"score": 150, "reasoning": "x"}', "stop", "does not fit JudgeVerdict"),
        (None, "stop", "without content"),
    ],
)
def test_openai_failed_answer_carries_the_tokens_it_spent(content: str | None, finish: str, fragment: str) -> None:
    """An answer came back (and was paid for) but is not usable: the error carries its usage."""
    with respx.mock() as api:
        api.post(OPENAI_URL).mock(
            return_value=httpx.Response(200, json=openai_completion(content, finish_reason=finish))
        )
        with pytest.raises(ProviderError, match=fragment) as caught:
            openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    (call,) = caught.value.failed_calls
    assert spent(call) == OPENAI_SPENT
    assert call.error == str(caught.value)


def test_openai_refusal_is_named() -> None:
    body = openai_completion(None)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."  # type: ignore[index]
    with respx.mock() as api:
        api.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=body))
        with pytest.raises(ProviderError, match=r"OpenAI refused: I can't help with that\.") as caught:
            openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert spent(caught.value.failed_calls[0]) == OPENAI_SPENT


def test_openai_length_cut_without_usage_is_not_reported() -> None:
    body = openai_completion('{"score": 1', finish_reason="length")
    del body["usage"]
    with respx.mock() as api:
        api.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=body))
        with pytest.raises(ProviderError, match="stopped early") as caught:
            openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    (call,) = caught.value.failed_calls
    assert (call.input_tokens, call.output_tokens, call.usage_reported) == (0, 0, False)
    assert call.model == "gpt-4o-mini-2024-07-18"  # the answer still named its model


@pytest.mark.parametrize("usage", [{"prompt_tokens": "lots", "completion_tokens": 58}, {"prompt_tokens": -412}])
def test_openai_usage_that_is_not_a_count_is_not_reported(usage: dict[str, Any]) -> None:
    """A broken (or hostile) server's usage is not taken: unknown tokens, rather than a wrong cost."""
    with respx.mock() as api:
        api.post(OPENAI_URL).mock(
            return_value=httpx.Response(
                200, json=openai_completion('{"score": 7, "reasoning": "x"}') | {"usage": usage}
            )
        )
        completion = openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert (completion.value.score, completion.tokens, completion.usage_reported) == (7, 0, False)


@pytest.mark.parametrize("finish", ["stop", None, "tool_calls", "function_call", "eos"])
def test_openai_accepts_a_complete_answer_whatever_its_finish_reason(finish: str | None) -> None:
    """Only "length" and "content_filter" mean a cut answer; compatible servers say "eos", or nothing."""
    with respx.mock() as api:
        api.post(OPENAI_URL).mock(
            return_value=httpx.Response(
                200, json=openai_completion('{"score": 42, "reasoning": "Fine."}', finish_reason=finish)
            )
        )
        completion = openai().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert (completion.value.score, completion.usage_reported, completion.failed_calls) == (42, True, ())


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.Response(
            401,
            json={"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": None}},
        ),
    ],
    ids=["connection", "http-401"],
)
def test_openai_call_without_an_answer_spent_nothing_known(failure: Exception | httpx.Response) -> None:
    with respx.mock() as api:
        route = api.post(OPENAI_URL)
        if isinstance(failure, Exception):
            route.mock(side_effect=failure)
        else:
            route.mock(return_value=failure)
        with pytest.raises(ProviderError, match="OpenAI request failed") as caught:
            openai(max_retries=0).generate("plan", JudgeVerdict, idea=IDEA, instructions="")
    assert caught.value.failed_calls == (
        FailedCall("openai", "gpt-4o-mini", 0, 0, str(caught.value), usage_reported=False),
    )


def anthropic_failing_at_max_tokens() -> AnthropicProvider:
    message = anthropic_message({"score": 5}) | {"stop_reason": "max_tokens"}
    return anthropic(lambda _: httpx2.Response(200, json=message))


def anthropic_unreachable() -> AnthropicProvider:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    return anthropic(refuse, max_retries=0)


def test_anthropic_failed_calls_carry_what_they_spent() -> None:
    with pytest.raises(ProviderError, match="stopped at max_tokens") as cut:
        anthropic_failing_at_max_tokens().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert spent(cut.value.failed_calls[0]) == FailedCall("anthropic", "claude-haiku-4-5", 380, 44, "", True)
    off_schema = anthropic(lambda _: httpx2.Response(200, json=anthropic_message({"score": 500, "reasoning": "x"})))
    with pytest.raises(ProviderError, match="does not fit JudgeVerdict") as wrong:
        off_schema.generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert spent(wrong.value.failed_calls[0]) == FailedCall("anthropic", "claude-haiku-4-5", 380, 44, "", True)
    with pytest.raises(ProviderError, match="Anthropic request failed") as down:
        anthropic_unreachable().generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert spent(down.value.failed_calls[0]) == FailedCall("anthropic", "claude-haiku-4-5", 0, 0, "", False)


def test_anthropic_answer_without_usage_is_not_reported() -> None:
    message = anthropic_message({"score": 64, "reasoning": "Worth a post."})
    del message["usage"]
    completion = anthropic(lambda _: httpx2.Response(200, json=message)).generate(
        "judge", JudgeVerdict, idea=IDEA, instructions=""
    )
    assert (completion.tokens, completion.usage_reported, completion.provider) == (0, False, "anthropic")


def openai_cut_at_length(api: respx.MockRouter) -> OpenAIProvider:
    """OpenAI answers, is paid for 412 + 58 tokens, and the answer is cut at the cap."""
    api.post(OPENAI_URL).mock(
        return_value=httpx.Response(200, json=openai_completion('{"score": 1', finish_reason="length"))
    )
    return openai(max_retries=0)


def test_fallback_to_offline_carries_the_failed_openai_call() -> None:
    with respx.mock() as api:
        completion = FallbackProvider([openai_cut_at_length(api), OfflineProvider()]).generate(
            "blog_post", BlogDraft, idea=IDEA, instructions=""
        )
    assert (completion.provider, completion.fell_back_to_offline, completion.tokens) == ("offline", True, 0)
    (call,) = completion.failed_calls
    assert spent(call) == OPENAI_SPENT  # what the failed call spent is not lost with it
    assert completion.fallback_errors == (f"openai:gpt-4o-mini: {call.error}",)


def test_every_provider_failing_carries_every_failed_call() -> None:
    with respx.mock() as api:
        chain = FallbackProvider(
            [openai_cut_at_length(api), anthropic_unreachable(), anthropic_failing_at_max_tokens()]
        )
        with pytest.raises(ProviderError, match="every provider failed") as caught:
            chain.generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert [spent(call) for call in caught.value.failed_calls] == [
        OPENAI_SPENT,
        FailedCall("anthropic", "claude-haiku-4-5", 0, 0, "", False),
        FailedCall("anthropic", "claude-haiku-4-5", 380, 44, "", True),
    ]
    # A chain inside a chain passes them on, in order.
    with respx.mock() as api:
        inner = FallbackProvider([openai_cut_at_length(api), anthropic_unreachable()])
        completion = FallbackProvider([inner, OfflineProvider()]).generate(
            "judge", JudgeVerdict, idea=IDEA, instructions=""
        )
    assert [spent(call) for call in completion.failed_calls] == [
        OPENAI_SPENT,
        FailedCall("anthropic", "claude-haiku-4-5", 0, 0, "", False),
    ]


def test_provider_error_keeps_its_old_shape_and_pickles_its_calls() -> None:
    assert ProviderError("plain").failed_calls == ()
    error = ProviderError("cut", failed_calls=(OPENAI_SPENT,))
    copy = pickle.loads(pickle.dumps(error))  # a worker process sends errors pickled
    assert (type(copy), str(copy), copy.failed_calls) == (ProviderError, "cut", (OPENAI_SPENT,))


class Unnamed:
    """A provider of one's own that does not say who answered (Completion.provider left "")."""

    name = "my-model"

    def generate(self, task: Task, schema: type[Any], *, idea: IdeaBrief, instructions: str) -> Completion[Any]:
        return Completion(JudgeVerdict(score=50, reasoning="Mine."), 3, 4, "mine-1")


def test_completion_provider_is_unknown_unless_said_and_a_chain_names_who_answered() -> None:
    assert Completion(JudgeVerdict(score=1, reasoning="x"), 0, 0, "m").provider == ""
    assert OfflineProvider().generate("judge", JudgeVerdict, idea=IDEA, instructions="").provider == "offline"
    with respx.mock() as api:
        chain = FallbackProvider([openai_cut_at_length(api), Unnamed()])
        completion = chain.generate("judge", JudgeVerdict, idea=IDEA, instructions="")
    assert (completion.provider, completion.model, completion.fell_back_to_offline) == ("my-model", "mine-1", False)
    assert spent(completion.failed_calls[0]) == OPENAI_SPENT
