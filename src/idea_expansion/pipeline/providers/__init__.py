"""Model providers: offline (default, deterministic), OpenAI and Anthropic, and a fallback chain."""

from .base import Completion, FallbackProvider, IdeaBrief, Provider, ProviderError, Task
from .llm import AnthropicProvider, OpenAIImageRenderer, OpenAIProvider
from .offline import OFFLINE_NOTE, OfflineProvider

__all__ = [
    "OFFLINE_NOTE",
    "AnthropicProvider",
    "Completion",
    "FallbackProvider",
    "IdeaBrief",
    "OfflineProvider",
    "OpenAIImageRenderer",
    "OpenAIProvider",
    "Provider",
    "ProviderError",
    "Task",
]
