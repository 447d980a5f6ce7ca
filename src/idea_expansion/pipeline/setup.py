"""Providers from settings: IDEA_EXPANSION_PROVIDER lists them in fallback order (`Pipeline.from_settings`)."""

from __future__ import annotations

from collections.abc import Callable

from .._exceptions import ConfigurationError
from .._settings import Settings
from .content import ImageDraft
from .providers import AnthropicProvider, FallbackProvider, OfflineProvider, OpenAIImageRenderer, OpenAIProvider
from .providers import Provider as ModelProvider

__all__ = ["image_renderer_from_settings", "providers_from_settings"]


def _provider_names(settings: Settings) -> list[str]:
    if not isinstance(settings, Settings):  # an AttributeError below, otherwise
        raise ConfigurationError(f"settings must be a Settings, not {type(settings).__name__}")
    return [n.strip().lower() for n in settings.provider.split(",") if n.strip()] or ["offline"]


def providers_from_settings(settings: Settings) -> ModelProvider:
    """`offline` (default), `openai`, `anthropic`, or a comma-separated fallback order such as
    `openai,anthropic,offline`."""
    chain: list[ModelProvider] = []
    for name in _provider_names(settings):
        if name == "offline":
            chain.append(OfflineProvider())
        elif name == "openai":
            chain.append(OpenAIProvider(api_key=settings.require("openai_api_key")))
        elif name == "anthropic":
            chain.append(AnthropicProvider(api_key=settings.require("anthropic_api_key")))
        else:
            raise ConfigurationError(
                f"IDEA_EXPANSION_PROVIDER lists an unknown provider {name!r}: use offline, openai or anthropic"
            )
    return chain[0] if len(chain) == 1 else FallbackProvider(chain)


def image_renderer_from_settings(settings: Settings) -> Callable[[ImageDraft], tuple[bytes, int, int, int]] | None:
    """OpenAI images when `openai` is among the providers; otherwise None (the offline title card)."""
    if "openai" not in _provider_names(settings):
        return None
    renderer = OpenAIImageRenderer(api_key=settings.require("openai_api_key"))
    return lambda draft: renderer.render(draft.prompt)
