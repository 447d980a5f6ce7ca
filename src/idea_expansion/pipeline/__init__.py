"""The expansion pipeline: judge, choose a format, generate, store, publish, with an exact audit trail."""

from ..types.expansions import ExpansionResult, ExpansionStatus
from ._processes import start_forkserver
from .async_runner import AsyncPipeline
from .content import (
    BlogPostContent,
    GitHubRepoContent,
    ImageContent,
    OutputContent,
    TwitterThreadContent,
)
from .github import GitHubPublisher, PublishError, github_http_client
from .providers import (
    AnthropicProvider,
    FallbackProvider,
    OfflineProvider,
    OpenAIProvider,
    ProviderError,
)
from .runner import Pipeline, WorkerProcessError, WorkerThreadError

__all__ = [
    "AnthropicProvider",
    "AsyncPipeline",
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
    "WorkerProcessError",
    "WorkerThreadError",
    "github_http_client",
    "start_forkserver",
]
