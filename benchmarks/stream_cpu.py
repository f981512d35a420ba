"""CPU time per streamed 500-token reply through the real `openai` client, before and after.

    .venv/bin/python benchmarks/stream_cpu.py [--replies N] [--rounds R]

The fake OpenAI server runs in a child process (its CPU is not counted) and streams each
reply as 500 chunks of one token (four characters), as the real API does. Measured in
this process with `time.process_time()`, alternating, best round of each kept:

- before: the client's parsed stream (`chat.completions.create(stream=True)`), one
  pydantic object per chunk, read the way threadteam read it until now;
- after: threadteam's `OpenAIModel.complete` (the raw response's lines, `json.loads`);
- floor: the raw response's bytes read and thrown away (what the transport alone costs).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from threadteam.teams.models import ChatMessage, ModelRequest  # noqa: E402
from threadteam.teams.models.openai import OpenAIModel  # noqa: E402

TOKENS = 500
TEXT = "".join(f"w{i:02d} " for i in range(TOKENS))[: TOKENS * 4]  # 500 tokens of 4 characters
FAKE_KEY = "-".join(("sk", "bench", "not", "a", "key"))
MESSAGES = [{"role": "system", "content": "Be concrete."},
            {"role": "user", "content": "Should a small bakery move its ordering to an app?"}]


async def serve(replies: int) -> None:
    """The child: a FakeOpenAI with `replies` answers queued; prints its URL, runs until stdin closes."""
    from tests.fakes.openai_server import FakeOpenAI

    async with FakeOpenAI() as fake:
        for _ in range(replies):
            fake.queue_text(TEXT, usage=(40, TOKENS), chunks=TOKENS)
        print(fake.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def before(client: openai.AsyncOpenAI) -> str:
    """The parsed stream, read as threadteam's OpenAI model read it before."""
    text: list[str] = []
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True})
    async with stream:
        async for chunk in stream:
            _ = chunk.model
            if chunk.usage is not None:
                _ = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            for choice in chunk.choices or ():
                delta = choice.delta
                if delta is None:
                    continue
                if delta.content:
                    text.append(delta.content)
                for _part in delta.tool_calls or ():
                    pass
    return "".join(text)


async def after(model: OpenAIModel) -> str:
    request = ModelRequest(model="gpt-4o-mini", system="Be concrete.", messages=(
        ChatMessage("user", MESSAGES[1]["content"], name="task"),), agent="bull")
    return (await model.complete(request)).text


async def floor(client: openai.AsyncOpenAI) -> str:
    async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}) as response:
        async for _ in response.iter_bytes():
            pass
    return TEXT


async def cpu_ms(read: Any, replies: int) -> float:
    """CPU milliseconds per reply over `replies` sequential replies."""
    start = time.process_time()
    for _ in range(replies):
        text = await read()
        assert text == TEXT, "the reply arrived incomplete"
    return (time.process_time() - start) / replies * 1000


async def measure(url: str, replies: int, rounds: int) -> dict[str, list[float]]:
    client = openai.AsyncOpenAI(base_url=url, api_key=FAKE_KEY, max_retries=0,
                                http_client=openai.DefaultAioHttpClient())
    model = OpenAIModel(client, "gpt-4o-mini")
    ways = {"before": lambda: before(client), "after": lambda: after(model),
            "floor": lambda: floor(client)}
    for read in ways.values():  # warm up
        await cpu_ms(read, 3)
    out: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, read in ways.items():
            out[name].append(await cpu_ms(read, replies))
    await client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=50, help="replies per round and way")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return
    total = (args.rounds + 1) * (args.replies * 3 + 9) + 10
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(total)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        figures = asyncio.run(measure(url, args.replies, args.rounds))
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    b, a, f = (min(figures[k]) for k in ("before", "after", "floor"))
    print(f"CPU per streamed {TOKENS}-token reply ({TOKENS} chunks) through the openai client, "
          f"best of {args.rounds} rounds of {args.replies}")
    print(f"  before (parsed stream, pydantic per chunk): {b:6.2f} ms")
    print(f"  after  (raw lines, json.loads):             {a:6.2f} ms")
    print(f"  floor  (raw bytes read, nothing decoded):   {f:6.2f} ms")
    print(f"  ratio: {b / a:.1f}x less CPU per reply (target >= 5x); "
          f"decoding itself: {b - f:.2f} ms -> {a - f:.2f} ms")


if __name__ == "__main__":
    main()
