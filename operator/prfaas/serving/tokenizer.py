"""Token counts of a prompt: exact for token ids and with a configured tokenizer, else the
documented approximation of ``prfaas.routing.tokens``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from prfaas.routing import tokens
from prfaas.routing.tokens import PromptTokens
from prfaas.serving.openai import Prompt

_INLINE_CHARS = 16_384  # below this, a thread hop costs more than the encode


class _Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


class TokenizerError(ValueError):
    """The tokenizer file cannot be loaded; the message says why."""


class _HFEncoder:
    """A Hugging Face ``tokenizer.json`` (the Rust ``tokenizers`` library: ~1 µs per token)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises bare Exceptions on bad files
            raise TokenizerError(f"{path}: not a Hugging Face tokenizer.json: {exc}") from None

    def encode(self, text: str) -> list[int]:
        # encode_batch releases the GIL (encode does not): ~3.5 µs per token, so a 120K-token
        # prompt takes ~0.4 s, which must not stall the event loop (see Counter.count_async)
        ids: list[int] = self._tok.encode_batch([text], add_special_tokens=False)[0].ids
        return ids


class Counter:
    """Counts prompts the same way in the router and the engines."""

    def __init__(self, tokenizer_file: str | Path | None = None) -> None:
        self._encoder: _Encoder | None = None
        if tokenizer_file is not None:
            path = Path(tokenizer_file)
            if path.is_dir():
                path = path / "tokenizer.json"
            if not path.is_file():
                raise TokenizerError(f"{path}: no such tokenizer file")
            self._encoder = _HFEncoder(path)

    @property
    def exact_text(self) -> bool:
        return self._encoder is not None

    async def count_async(self, prompt: Prompt) -> PromptTokens:
        """``count``, off the event loop when a tokenizer has real work to do."""
        if self._encoder is not None and prompt.ids is None and len(prompt.text) > _INLINE_CHARS:
            return await asyncio.to_thread(self.count, prompt)
        return self.count(prompt)

    def count(self, prompt: Prompt) -> PromptTokens:
        if prompt.ids is not None:
            return tokens.of_ids(prompt.ids)
        if self._encoder is not None:
            return tokens.of_ids(self._encoder.encode(prompt.text))
        return tokens.approximate(prompt.text)
