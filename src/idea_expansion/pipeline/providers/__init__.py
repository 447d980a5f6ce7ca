"""Model providers: offline (default, deterministic), OpenAI (or any OpenAI-compatible server) and
Anthropic, and a fallback chain."""

from .base import (
    MAX_OUTPUT_TOKENS,
    TASKS,
    Completion,
    FailedCall,
    FallbackProvider,
    IdeaBrief,
    Provider,
    ProviderError,
    RenderedImage,
    Task,
)
from .llm import LOCAL_SERVER_KEY, AnthropicProvider, OpenAIImageRenderer, OpenAIProvider, token_parameter_for
from .offline import OFFLINE_NOTE, OfflineProvider

__all__ = [
    "LOCAL_SERVER_KEY",
    "MAX_OUTPUT_TOKENS",
    "OFFLINE_NOTE",
    "TASKS",
    "AnthropicProvider",
    "Completion",
    "FailedCall",
    "FallbackProvider",
    "IdeaBrief",
    "OfflineProvider",
    "OpenAIImageRenderer",
    "OpenAIProvider",
    "Provider",
    "ProviderError",
    "RenderedImage",
    "Task",
    "token_parameter_for",
]
