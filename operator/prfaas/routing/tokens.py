"""Prompt length and prefix block hashes, the two things the fast loop needs from a prompt.

Token-ID prompts are exact: ``len`` and ``prefix.block_hashes``. Text prompts need the model's
tokenizer (``prfaas.serving.tokenizer`` loads a Hugging Face ``tokenizer.json`` when one is
configured); without one, ``approximate`` counts one token per ``BYTES_PER_TOKEN`` UTF-8 bytes
(BPE tokenizers of current LLMs average 3.5–4.5 bytes per token on English and code) and hashes
the text in blocks of ``BLOCK_TOKENS × BYTES_PER_TOKEN`` bytes, so equal text prefixes still map
to equal block ids. Callers count approximations in their metrics.

The hash is a keyed-free BLAKE2b, chained like ``block_hashes``: stable across processes and
machines (Python's ``hash`` of bytes is randomised per process), so engines and routers agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from prfaas.routing.prefix import BLOCK_TOKENS, block_hashes

BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class PromptTokens:
    length: int  # tokens in the prompt
    hashes: list[int]  # chained ids of its full blocks
    exact: bool  # False: approximated from text


def of_ids(ids: Sequence[int], block_tokens: int = BLOCK_TOKENS) -> PromptTokens:
    return PromptTokens(len(ids), block_hashes(ids, block_tokens), True)


def approximate(text: str, block_tokens: int = BLOCK_TOKENS) -> PromptTokens:
    data = text.encode("utf-8", "surrogatepass")
    count = -(-len(data) // BYTES_PER_TOKEN)
    block = block_tokens * BYTES_PER_TOKEN
    hashes: list[int] = []
    prev = b"\0" * 8
    for start in range(0, len(data) - block + 1, block):
        prev = hashlib.blake2b(prev + data[start : start + block], digest_size=8).digest()
        hashes.append(int.from_bytes(prev, "little") >> 1)
    return PromptTokens(count, hashes, False)
