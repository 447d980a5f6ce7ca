"""What model calls cost: a price table in USD per million tokens (IDEA_EXPANSION_PRICES), exact decimals.

    IDEA_EXPANSION_PRICES='{"gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.60}}'

A model the table does not name is unpriced: `cost` returns None and the run records no cost, rather than a
wrong one. An API that answers with a dated snapshot (gpt-4o-mini-2024-07-18, claude-haiku-4-5-20251001)
is priced as the model without the date when only that is in the table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .._exceptions import ConfigurationError

__all__ = ["MAX_PRICE_PER_MILLION", "ModelPrice", "PriceTable"]

SETTING = "IDEA_EXPANSION_PRICES"
MAX_PRICE_PER_MILLION = Decimal(100_000)
"""The most a price table may say one million tokens cost: a typo guard far above any real price."""
_FIELDS = ("input_per_million", "output_per_million")
_MILLION = Decimal(1_000_000)
_DATED = re.compile(r"^(?P<model>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million input (prompt) and output (completion) tokens of one model."""

    input_per_million: Decimal
    output_per_million: Decimal


def _price(model: str, field: str, value: Any) -> Decimal:
    where = f"{SETTING}: {model!r} {field}"
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigurationError(f"{where} must be a number, not {value!r}")
    try:
        # Through str: 0.1 is read as the decimal 0.1, not the binary float nearest to it.
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigurationError(f"{where} must be a number, not {value!r}") from None
    if not price.is_finite() or price < 0 or price > MAX_PRICE_PER_MILLION:
        raise ConfigurationError(f"{where} must be a number from 0 to {MAX_PRICE_PER_MILLION}, not {value!r}")
    return price


class PriceTable:
    """Prices per model; `cost(model, input_tokens, output_tokens)` in USD as an exact `Decimal`."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self.prices = dict(prices)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> PriceTable:
        """A table from IDEA_EXPANSION_PRICES's JSON: {model: {"input_per_million": x, "output_per_million": y}}.

        Raises:
            ConfigurationError: naming IDEA_EXPANSION_PRICES, for a blank model name, an unknown or missing
                key, or a price that is not a number from 0 to `MAX_PRICE_PER_MILLION`.
        """
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{SETTING} must be a JSON object of models, not {type(raw).__name__}")
        prices: dict[str, ModelPrice] = {}
        for model, entry in raw.items():
            if not isinstance(model, str) or not model.strip():
                raise ConfigurationError(f"{SETTING}: a model name must be non-blank text, not {model!r}")
            if not isinstance(entry, Mapping):
                raise ConfigurationError(
                    f'{SETTING}: {model!r} must be {{"input_per_million": x, "output_per_million": y}}'
                )
            unknown = sorted(str(k) for k in entry if k not in _FIELDS)
            if unknown:
                raise ConfigurationError(
                    f"{SETTING}: {model!r} has unknown key(s) {', '.join(unknown)}: use {' and '.join(_FIELDS)}"
                )
            missing = [k for k in _FIELDS if k not in entry]
            if missing:
                raise ConfigurationError(f"{SETTING}: {model!r} lacks {' and '.join(missing)}")
            prices[model.strip()] = ModelPrice(*(_price(model, k, entry[k]) for k in _FIELDS))
        return cls(prices)

    def price(self, model: str) -> ModelPrice | None:
        """The model's price: by its name, else by its name without a snapshot date; None if unpriced."""
        if model in self.prices:
            return self.prices[model]
        dated = _DATED.match(model)
        return self.prices.get(dated["model"]) if dated else None

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
        """USD for one call, exact (not rounded); None when the model is not in the table."""
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError("token counts are never negative")
        price = self.price(model)
        if price is None:
            return None
        return (input_tokens * price.input_per_million + output_tokens * price.output_per_million) / _MILLION

    def __repr__(self) -> str:
        return f"PriceTable({sorted(self.prices)})"
