"""The pipeline's model configuration from settings (`Pipeline.from_settings`): the providers
IDEA_EXPANSION_PROVIDER lists in fallback order, each with its models, base URL and limits; the image mode
and its renderer; the price table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._exceptions import ConfigurationError
from .._settings import ImageMode, Settings
from .content import ImageDraft
from .pricing import PriceTable
from .providers import (
    AnthropicProvider,
    FallbackProvider,
    OfflineProvider,
    OpenAIImageRenderer,
    OpenAIProvider,
    RenderedImage,
)
from .providers import Provider as ModelProvider

__all__ = [
    "image_mode_from_settings",
    "image_renderer_from_settings",
    "prices_from_settings",
    "providers_from_settings",
]


def _checked(settings: Settings) -> Settings:
    if not isinstance(settings, Settings):  # an AttributeError below, otherwise
        raise ConfigurationError(f"settings must be a Settings, not {type(settings).__name__}")
    return settings


def _provider_names(settings: Settings) -> list[str]:
    return [n.strip().lower() for n in _checked(settings).provider.split(",") if n.strip()] or ["offline"]


def _key(settings: Settings, name: str, base_url: str | None) -> str | None:
    """The API key, required unless a base URL names a compatible server (which gets a placeholder)."""
    if base_url:
        value = getattr(settings, name)
        return value.get_secret_value() or None if value is not None else None
    return settings.require(name)


_MODEL_PROVIDERS: dict[str, tuple[Callable[..., ModelProvider], tuple[str, ...]]] = {
    "openai": (OpenAIProvider, ("token_parameter",)),
    "anthropic": (AnthropicProvider, ()),
}
"""The model providers by name: the class, and the options it takes beyond the ones all share. Each reads
the settings `<name>_api_key`, `<name>_base_url`, `<name>_model`, `<name>_models` and `<name>_<option>`."""


def _model_provider(settings: Settings, name: str) -> ModelProvider:
    cls, options = _MODEL_PROVIDERS[name]
    base_url: str | None = getattr(settings, f"{name}_base_url")
    extra: dict[str, Any] = {option: getattr(settings, f"{name}_{option}") for option in options}
    return cls(
        api_key=_key(settings, f"{name}_api_key", base_url),
        base_url=base_url,
        model=getattr(settings, f"{name}_model"),
        models=getattr(settings, f"{name}_models"),
        timeout=settings.model_timeout,
        max_retries=settings.model_max_retries,
        **extra,
    )


def providers_from_settings(settings: Settings) -> ModelProvider:
    """`offline` (default), `openai`, `anthropic`, or a comma-separated fallback order such as
    `openai,anthropic,offline`. OpenAI and Anthropic take their models (IDEA_EXPANSION_OPENAI_MODEL(S),
    IDEA_EXPANSION_ANTHROPIC_MODEL(S)), base URLs (OPENAI_BASE_URL, ANTHROPIC_BASE_URL; a key is then
    optional), timeout and retries from the settings, and OpenAI the parameter its output cap is sent in
    (IDEA_EXPANSION_OPENAI_TOKEN_PARAMETER).

    Raises:
        ConfigurationError: an unknown provider name, or a missing API key."""
    chain: list[ModelProvider] = []
    for name in _provider_names(settings):
        if name == "offline":
            chain.append(OfflineProvider())
        elif name in _MODEL_PROVIDERS:
            chain.append(_model_provider(settings, name))
        else:
            raise ConfigurationError(
                f"IDEA_EXPANSION_PROVIDER lists an unknown provider {name!r}: use offline, openai or anthropic"
            )
    return chain[0] if len(chain) == 1 else FallbackProvider(chain)


def image_mode_from_settings(settings: Settings) -> ImageMode:
    """IDEA_EXPANSION_IMAGE_MODE: "none" (no images), "card" (the offline title card, the default) or
    "model" (an image model, paid per image; never on unless asked for)."""
    return _checked(settings).image_mode


def image_renderer_from_settings(settings: Settings) -> Callable[[ImageDraft], RenderedImage] | None:
    """The image model's renderer in image mode "model" (IDEA_EXPANSION_IMAGE_MODEL through the OpenAI Images
    API, at OPENAI_BASE_URL when set); None in the other modes (the title card, or no image).

    Raises:
        ConfigurationError: mode "model" without OPENAI_API_KEY or OPENAI_BASE_URL."""
    if image_mode_from_settings(settings) != "model":
        return None
    renderer = OpenAIImageRenderer(
        api_key=_key(settings, "openai_api_key", settings.openai_base_url),
        base_url=settings.openai_base_url,
        model=settings.image_model,
        timeout=max(settings.model_timeout, 120.0),  # an image takes longer than most answers
        max_retries=settings.model_max_retries,
    )

    def render(draft: ImageDraft) -> RenderedImage:
        return renderer.render(draft.prompt)

    return render


def prices_from_settings(settings: Settings) -> PriceTable | None:
    """The price table of IDEA_EXPANSION_PRICES; None when it is unset or empty (no cost is recorded).

    Raises:
        ConfigurationError: naming IDEA_EXPANSION_PRICES, for a malformed table."""
    raw = _checked(settings).prices
    return PriceTable.from_mapping(raw) if raw else None
