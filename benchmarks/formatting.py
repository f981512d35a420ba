"""How long one message takes to format for a platform, for ordinary and hostile shapes.

    python benchmarks/formatting.py [--size 40000] [--runs 5] [--platform slack]

Every shape is one message of --size characters (Slack's own cap on `text` is 40,000),
formatted the way the adapter formats an agent's post (Markdown -> the platform's
markup, then split into posts). The figure is the median time per message over
--runs; target < 50 ms for every shape (the event loop does nothing else meanwhile).

Platforms are sections in `PLATFORMS` (a name -> a function formatting one agent
message); add one to measure another adapter's text path on the same shapes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_MS = 50.0


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def shapes(size: int) -> dict[str, str]:
    """Input shapes: what models write, and what made the old regexes backtrack."""
    prose = ("The **bull** case: revenue grows 20% a year, see [the model](https://ex.com/m) "
             "and `growth.py`; the *bear* case is ~~weak~~ thin.\n\n- one\n- two\n\n")
    return {
        "ordinary markdown": _repeat(prose, size),
        "plain words": _repeat("word ", size),
        "[a[a[a": _repeat("[a", size),
        "[a](http:x…": "[" + _repeat("a](http:x", size - 1),
        "**a **a": _repeat("**a ", size),
        "__a __a": _repeat("__a ", size),
        " *a *a": _repeat(" *a", size),
        "~~a ~~a": _repeat("~~a ", size),
        "`a`a": _repeat("`a", size),
        "``a ``a": _repeat("``a ", size),
        "<@<@": _repeat("<@", size),
        "<http:a|b": _repeat("<http:a|b ", size),
        "_a _a": _repeat("_a ", size),
        "# a<spaces>b": "# a" + " " * (size - 4) + "b",
        "# a # # #": "# a" + _repeat(" #", size - 3),
        "- - - … x": "-" + _repeat(" -", size - 2) + "x",
        ">>>>": _repeat(">", size),
        "&&&&": _repeat("&", size),
        "<!here> x": _repeat("<!here> @channel x ", size),
        "```\\n```": _repeat("```\n", size),
        "a\\na\\n": _repeat("a\n", size),
        "a\\n\\na": _repeat("a\n\n", size),
        "``` + long opener": "```" + "x" * (size - 10) + "\ny\n```",
    }


def slack(text: str) -> object:
    """Slack: Markdown -> mrkdwn (as for an agent's post), then split into posts."""
    from threadteam.adapters.slack.text import split_text, to_mrkdwn

    return split_text(to_mrkdwn(text, italics=True))


PLATFORMS: dict[str, Callable[[str], object]] = {"slack": slack}


def measure(fmt: Callable[[str], object], text: str, runs: int) -> float:
    """Median milliseconds `fmt(text)` takes over `runs`."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fmt(text)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=40_000, help="characters per message")
    parser.add_argument("--runs", type=int, default=5, help="runs per shape (median shown)")
    parser.add_argument("--platform", choices=sorted(PLATFORMS), action="append",
                        help="only this platform (repeatable; default: all)")
    args = parser.parse_args()
    worst = 0.0
    for name in args.platform or list(PLATFORMS):
        fmt = PLATFORMS[name]
        print(f"{name}: ms per {args.size:,}-character message (median of {args.runs}; "
              f"target < {TARGET_MS:.0f} ms)")
        for shape, text in shapes(args.size).items():
            ms = measure(fmt, text, args.runs)
            worst = max(worst, ms)
            flag = "" if ms < TARGET_MS else "   <-- over target"
            print(f"  {shape:22s} {ms:8.2f} ms{flag}")
    print(f"worst: {worst:.2f} ms")
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
