"""The expansion pipeline: judge, choose a format, generate, store, publish, with an exact audit trail."""

from .content import (
    BlogPostContent,
    GitHubRepoContent,
    ImageContent,
    OutputContent,
    TwitterThreadContent,
    parse_content,
)
from .github import GitHubPublisher, PublishError
from .providers import (
    AnthropicProvider,
    FallbackProvider,
    OfflineProvider,
    OpenAIProvider,
    ProviderError,
)
from .runner import ExpansionResult, ExpansionStatus, Pipeline

__all__ = [
    "AnthropicProvider",
    "BlogPostContent",
    "ExpansionResult",
    "ExpansionStatus",
    "FallbackProvider",
    "GitHubPublisher",
    "GitHubRepoContent",
    "ImageContent",
    "OfflineProvider",
    "OpenAIProvider",
    "OutputContent",
    "Pipeline",
    "ProviderError",
    "PublishError",
    "TwitterThreadContent",
    "parse_content",
]
