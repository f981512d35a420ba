"""How long reading a long run holds up the event loop: the longest stall while a driver
loads a run of 1,000 to 10,000 events from SQLite, with the log folded on a worker thread
(as the runner does from `LONG_LOG` events on) and, for comparison in the same run, on the
event loop itself.

    .venv/bin/python benchmarks/long_run.py [--messages 500,2500,5000] [--repeats 5]

A run of the built-in debate's shape is written straight into a SQLite store (an agent
message is two events: the speaker chosen, then the message), then loaded by
`Runner.load` while a ticker on the same loop notes the longest gap between its turns
(the time every other run, and every ack, would wait). Figures are the best of
`--repeats`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

from engine import TASK, CannedModel, OneModel, debate  # noqa: E402

from tests.fakes.poster import RecordingPoster  # noqa: E402
from threadteam.bot import runner as runner_module  # noqa: E402
from threadteam.bot.runner import Runner  # noqa: E402
from threadteam.bot.stores.sqlite import SQLiteStore  # noqa: E402
from threadteam.teams.catalog import TeamCatalog  # noqa: E402
from threadteam.teams.engine import Env, drive  # noqa: E402
from threadteam.teams.events import Event, TaskStarted, to_json  # noqa: E402
from threadteam.teams.state import RunState  # noqa: E402

TEAM = ROOT / "teams" / "builtin" / "debate.yaml"


async def run_log(messages: int) -> list[str]:
    """The stored events of a debate run of `messages` agent messages."""
    events: list[Event] = []

    class Recorded(RunState):
        def apply(self, e: Event) -> None:
            events.append(e)
            super().apply(e)

    team = debate(messages)
    state = Recorded(team)
    state.apply(TaskStarted(team="debate", task=TASK, by="U1"))
    await drive(state, Env(models=OneModel(CannedModel())))
    return [to_json(e) for e in events]


async def stall_ms(runner: Runner, run_id: str) -> tuple[float, float]:
    """(longest gap between the ticker's turns, whole load), in ms."""
    longest, last = 0.0, time.perf_counter()

    async def tick() -> None:
        nonlocal longest, last
        while True:
            now = time.perf_counter()
            longest, last = max(longest, now - last), now
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    last = time.perf_counter()
    start = time.perf_counter()
    loaded = await runner.load(run_id)
    end = time.perf_counter()
    whole, longest = end - start, max(longest, end - last)  # held until the load returned
    ticker.cancel()
    assert loaded is not None, "the run did not load"
    return longest * 1000, whole * 1000


async def main(sizes: list[int], repeats: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        teams = Path(folder) / "teams"
        teams.mkdir()
        text = TEAM.read_text()
        (teams / "debate.yaml").write_text(text[:text.index("termination:")]
                                           + "termination:\n  max_messages: 100000\n")
        store = SQLiteStore(str(Path(folder) / "long.sqlite3"))
        await store.start()
        try:
            runner = Runner(store=store, catalog=TeamCatalog.load(teams, strict=True),
                            models=OneModel(CannedModel()), poster=RecordingPoster(),
                            owner="bench")
            print(f"loading a debate run from SQLite; a worker thread folds logs of "
                  f"{runner_module.LONG_LOG}+ events (best of {repeats})")
            print(f"{'messages':>8} {'events':>7}  {'loop held, folded off it':>25}  "
                  f"{'loop held, folded on it':>24}  {'whole load (off / on)':>22}")
            threshold = runner_module.LONG_LOG
            for messages in sizes:
                raw = await run_log(messages)
                run_id = f"long-{messages}"
                await store.create_run(run_id, f"bench:W:C:{messages}", raw)
                figures = {}
                for mode, limit in (("off", threshold), ("on", 10**12)):
                    runner_module.LONG_LOG = limit
                    best = [min(x) for x in zip(*[await stall_ms(runner, run_id)
                                                  for _ in range(repeats)], strict=True)]
                    figures[mode] = best
                runner_module.LONG_LOG = threshold
                print(f"{messages:>8} {len(raw):>7}  {figures['off'][0]:>22.1f} ms  "
                      f"{figures['on'][0]:>21.1f} ms  "
                      f"{figures['off'][1]:>9.1f} / {figures['on'][1]:.1f} ms")
        finally:
            await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", default="500,2500,5000",
                        help="comma-separated agent messages per run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main([int(n) for n in args.messages.split(",")], args.repeats))
