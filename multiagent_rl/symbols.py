"""A symbol-only channel: a role whose messages are exactly `length` symbols from a fixed
list, so that any meaning its messages carry has to be invented and learned, not borrowed
from English (the setting of emergent-communication studies such as EGG's).

Each symbol is one token of the model's vocabulary (its encoding with a leading space, so
messages read "ka po"), and decoding is constrained to those tokens in every backend (HF:
a logits mask; vLLM and the vLLM server: `allowed_token_ids`). The end-of-turn token is
not among them, so every message is exactly `length` symbols. The sampler's log-probs are
those of the constrained distribution, and the update scores the same renormalised
distribution (`TurnSample.allowed_token_ids`), so the importance ratio compares like
with like.

>>> Role("speaker", SPEAKER, channel=SymbolChannel(("ka", "po", "mu", "ti"), length=2))  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ScenarioError

_SYMBOL = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class SymbolChannel:
    """`symbols`: distinct lower-case words, each one token of the model's vocabulary;
    `length`: the number of symbols in every message."""

    symbols: tuple[str, ...]
    length: int

    def __post_init__(self) -> None:
        symbols = tuple(self.symbols)
        object.__setattr__(self, "symbols", symbols)
        if len(symbols) < 2:
            raise ScenarioError(f"a symbol channel needs at least 2 symbols, got {list(symbols)}")
        bad = [s for s in symbols if not isinstance(s, str) or not _SYMBOL.fullmatch(s)]
        if bad:
            raise ScenarioError(f"symbols must be lower-case letters a-z only, got {bad[0]!r}")
        repeated = sorted({s for s in symbols if symbols.count(s) > 1})
        if repeated:
            raise ScenarioError(f"symbols must be distinct; repeated: {', '.join(repeated)}")
        if not (isinstance(self.length, int) and self.length >= 1):
            raise ScenarioError(f"a symbol channel's length must be an int >= 1, got {self.length!r}")

    def token_ids(self, tokenizer) -> tuple[int, ...]:
        """Each symbol's one token (its encoding with a leading space), in symbol order; a
        symbol that this tokenizer splits into several tokens is refused by name."""
        ids = []
        for symbol in self.symbols:
            encoded = tokenizer.encode(" " + symbol, add_special_tokens=False)
            if len(encoded) != 1:
                raise ScenarioError(
                    f"symbol {symbol!r} is {len(encoded)} tokens for this model's tokenizer ({encoded}); "
                    "each symbol must be one token: pick another spelling"
                )
            ids.append(int(encoded[0]))
        return tuple(ids)

    def parse(self, text: str) -> tuple[str, ...] | None:
        """The message's symbols, or None when it is not exactly `length` known symbols."""
        said = tuple(text.split())
        return said if len(said) == self.length and all(s in self.symbols for s in said) else None


def allowed_token_ids(channels: Sequence[SymbolChannel | None], tokenizer) -> list[tuple[int, ...] | None]:
    """Per request, the tokens its channel allows (None: any), each channel resolved once."""
    resolved: dict[SymbolChannel, tuple[int, ...]] = {}
    out: list[tuple[int, ...] | None] = []
    for channel in channels:
        if channel is not None and channel not in resolved:
            resolved[channel] = channel.token_ids(tokenizer)
        out.append(resolved[channel] if channel is not None else None)
    return out
