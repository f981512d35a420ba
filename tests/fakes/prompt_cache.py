"""The providers' prompt-caching rules, for the fake servers to bill requests by.

Tokens are counted as four characters of the request's JSON, a stand-in for a real
tokenizer that is good enough to compare layouts: what matters is which bytes repeat.

- OpenAI (automatic): a request whose first 1,024 tokens match an earlier request's reads
  the matching prefix from the cache, in steps of 128 tokens; every request is cached.
- Anthropic (explicit): blocks marked `cache_control` are breakpoints; each one's prefix
  is written to the cache (if at least `min_tokens` long), and a breakpoint reads the
  longest prefix cached at any of the 20 block boundaries at or before it. More than 4
  breakpoints is a 400, as on the real API.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AnthropicCache", "OpenAICache", "tokens"]

CHARS_PER_TOKEN = 4


def tokens(text: str) -> int:
    """The fakes' token count of `text`."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class OpenAICache:
    """OpenAI's rule: prefixes of at least 1,024 tokens, matched in 128-token steps."""

    minimum: int = 1024
    step: int = 128
    seen: set[bytes] = field(default_factory=set)

    def bill(self, body: dict) -> tuple[int, int]:
        """(prompt tokens, cached tokens) of one Chat Completions request; caches it."""
        prompt = "".join(_json(t) for t in body.get("tools") or ()) + "".join(
            _json(m) for m in body.get("messages") or ())
        data = prompt.encode()
        total = -(-len(data) // CHARS_PER_TOKEN)
        cached, matching = 0, True
        digest = hashlib.sha256()
        edge, size = 0, self.minimum
        while size <= total:
            end = size * CHARS_PER_TOKEN
            digest.update(data[edge:end])
            edge = end
            key = digest.copy().digest()
            if matching and key in self.seen:
                cached = size
            else:
                matching = False
            self.seen.add(key)
            size += self.step
        return total, cached


@dataclass
class AnthropicCache:
    """Anthropic's rule: breakpoints, a 20-block lookback, a minimum cacheable prefix."""

    min_tokens: int = 1024
    lookback: int = 20
    max_breakpoints: int = 4
    seen: set[bytes] = field(default_factory=set)

    def refusal(self, body: dict) -> str | None:
        """The real API's 400 message for a request it refuses (too many breakpoints)."""
        found = sum(1 for _, marked in _anthropic_blocks(body) if marked)
        if found > self.max_breakpoints:
            return (f"A maximum of {self.max_breakpoints} blocks with cache_control may be "
                    f"provided. Found {found}.")
        return None

    def bill(self, body: dict) -> tuple[int, int, int]:
        """(uncached input, cache writes, cache reads) of one Messages request; caches it."""
        blocks = _anthropic_blocks(body)
        hashes, ends = [], []
        digest, size = hashlib.sha256(), 0
        for block, _ in blocks:
            text = _json(block)
            digest.update(text.encode())
            hashes.append(digest.copy().digest())
            size += tokens(text)
            ends.append(size)
        marks = [i for i, (_, marked) in enumerate(blocks) if marked]
        read_at = -1
        for mark in marks:
            for i in range(mark, max(-1, mark - self.lookback), -1):
                if hashes[i] in self.seen:
                    read_at = max(read_at, i)
                    break
        read = ends[read_at] if read_at >= 0 else 0
        written = 0
        cacheable = [m for m in marks if ends[m] >= self.min_tokens]
        if cacheable and cacheable[-1] > read_at:
            written = ends[cacheable[-1]] - read
        for m in cacheable:
            self.seen.add(hashes[m])
        return size - read - written, written, read


def _anthropic_blocks(body: dict) -> list[tuple[Any, bool]]:
    """The request's blocks in cache order (tools, system, messages), each without its
    `cache_control`, and whether it carried one. A turn's first block carries its role."""
    out: list[tuple[Any, bool]] = []

    def add(block: Any, prefix: str = "") -> None:
        if isinstance(block, dict):
            marked = "cache_control" in block
            block = {k: v for k, v in block.items() if k != "cache_control"}
        else:
            marked = False
        out.append(([prefix, block] if prefix else block, marked))

    for tool in body.get("tools") or ():
        add(tool)
    system = body.get("system")
    if isinstance(system, str):
        add({"type": "text", "text": system})
    elif isinstance(system, list):
        for block in system:
            add(block)
    for message in body.get("messages") or ():
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for i, block in enumerate(blocks):
            add(block, message.get("role", "") if i == 0 else "")
    return out
