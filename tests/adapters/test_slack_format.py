"""Markdown -> mrkdwn and splitting long text for Slack."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from threadteam.adapters.slack.text import (
    _BULLET,
    _FENCE,
    _RULE,
    LIMIT,
    _heading,
    _inline,
    split_text,
    to_mrkdwn,
)


@pytest.mark.parametrize(("markdown", "mrkdwn"), [
    ("**bold** and __also__", "*bold* and *also*"),
    ("*italic* text", "_italic_ text"),
    ("~~gone~~", "~gone~"),
    ("see [the docs](https://example.com/a?b=1&c=2)", "see <https://example.com/a?b=1&c=2|the docs>"),
    ("## A heading", "*A heading*"),
    ("# **Bold** heading", "*Bold heading*"),
    ("- one\n* two\n  + three", "• one\n• two\n  • three"),
    ("> quoted **words**", "> quoted *words*"),
    ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
    ("**a**\x00\x01\x02\x03b", "*a*b"),  # the rewrite's own markers never come out as text
    ("**use `x < y`** and ~~`old`~~", "*use `x &lt; y`* and ~`old`~"),  # emphasis wraps code
    ("![logo](https://example.com/l.png) **[docs](https://d.io)**",
     "<https://example.com/l.png|logo> *<https://d.io|docs>*"),
    ("[a[b](https://x.io) [c](ftp://y) [](https://z)", "<https://x.io|a[b> [c](ftp://y) [](https://z)"),
    ("#  Title  ##  ", "*Title*"),
    ("####### seven", "####### seven"),
    ("*a **b** c*", "_a *b* c_"),
    ("ask <@U123> in <#C42> <!here>", "ask <@U123> in <#C42> &lt;!here&gt;"),  # no pings
    ("x = 2 * 3 * 4", "x = 2 * 3 * 4"),
    ("snake_case_name stays", "snake_case_name stays"),
    ("---", "───"),
])
def test_markdown_becomes_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_code_is_left_alone_but_escaped() -> None:
    text = "Run `**not bold**` then:\n```python\nif a < b and **x**:\n\n    pass\n```\n**after**"
    assert to_mrkdwn(text) == ("Run `**not bold**` then:\n```python\nif a &lt; b and **x**:\n\n"
                               "    pass\n```\n*after*")


def test_short_text_is_one_part() -> None:
    assert split_text("hello\n\nworld") == ["hello\n\nworld"]


def test_long_text_splits_at_paragraphs_in_order() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 270 for i in range(6)]
    parts = split_text("\n\n".join(paragraphs))
    assert len(parts) > 1
    assert all(len(p) <= LIMIT for p in parts)
    assert "\n\n".join(parts) == "\n\n".join(p for p in paragraphs)  # nothing lost, order kept
    assert all(p.startswith("Paragraph") for p in parts)  # cuts fall between paragraphs


def test_one_huge_paragraph_splits_between_words() -> None:
    text = " ".join(f"w{i}" for i in range(3000))
    parts = split_text(text, 1000)
    assert all(len(p) <= 1000 for p in parts)
    assert " ".join(parts).split() == text.split()


def test_unbroken_text_is_cut_hard() -> None:
    parts = split_text("x" * 2500, 1000)
    assert [len(p) for p in parts] == [1000, 1000, 500]


def test_a_split_code_block_is_closed_and_reopened() -> None:
    code = "```\n" + "\n".join(f"line {i}" for i in range(400)) + "\n```"
    parts = split_text(f"Intro.\n\n{code}\n\nOutro.", 1000)
    code_parts = [p for p in parts if "line" in p]
    assert len(code_parts) > 1
    for p in code_parts:
        assert p.startswith("```") and p.count("```") == 2  # each piece is whole code
        assert len(p) <= 1000
    lines = [ln for p in code_parts for ln in p.splitlines() if ln.startswith("line")]
    assert lines == [f"line {i}" for i in range(400)]
    assert parts[0] == "Intro." and parts[-1].endswith("Outro.")


@given(st.text(alphabet=st.characters(blacklist_characters="-*_~`[#>&<+!\x00\x01\x02\x03"),
               max_size=200))
def test_text_without_markup_characters_is_already_mrkdwn(text) -> None:
    # to_mrkdwn returns such text untouched without rewriting it: it must be a no-op.
    for line in text.split("\n"):
        assert not any(r.match(line) for r in (_RULE, _BULLET, _FENCE)) and _heading(line) is None
        assert _inline(line, True) == line == _inline(line, False)


# -- time linear in the input ---------------------------------------------------------------
def _repeat(unit: str, size: int = 40_000) -> str:
    return (unit * (size // len(unit) + 1))[:size]


PATHOLOGICAL = {  # each took the old regexes seconds (headings: minutes) at this size
    "open brackets": _repeat("[a"),
    "links without an end": "[" + _repeat("a](http:x"),
    "unclosed bold": _repeat("**a "),
    "unclosed underline bold": _repeat("__a "),
    "unclosed italics": _repeat(" *a"),
    "unclosed strike": _repeat("~~a "),
    "backticks": _repeat("`a"),
    "backtick pairs": _repeat("``a "),
    "angle brackets": _repeat("<@"),
    "angle links": _repeat("<http:a|b "),
    "underscores": _repeat("_a "),
    "a heading of spaces": "# a" + " " * 39_996 + "b",
    "a heading of hashes": "# a" + _repeat(" #", 39_996),
    "a rule that is not one": "-" + _repeat(" -", 39_998) + "x",
    "a quote": _repeat(">"),
    "fences": _repeat("```\n"),
    "short lines": _repeat("a\n"),
    "short paragraphs": _repeat("a\n\n"),
    "a fence opener longer than a post": "```" + "x" * 39_990 + "\ny\n```",
}


@pytest.mark.parametrize("text", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_any_40k_message_formats_and_splits_in_well_under_a_second(text: str) -> None:
    import time

    started = time.perf_counter()
    parts = split_text(to_mrkdwn(text, italics=True))
    to_mrkdwn(text, italics=False)
    assert time.perf_counter() - started < 1.0  # linear: tens of ms; the old regexes took seconds
    assert all(len(p) <= LIMIT for p in parts)


def test_a_fence_whose_opening_line_is_too_long_is_cut_like_text() -> None:
    text = "```" + "x" * 120 + "\nline one\nline two\n```"
    parts = split_text(text, 100)  # it used to loop forever: no room left inside the fences
    assert all(len(p) <= 100 for p in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")


def test_a_closing_line_with_more_than_backticks_is_kept() -> None:
    text = "```\n" + "\n".join(f"line {i}" for i in range(40)) + "\n```then more words"
    parts = split_text(text, 100)
    assert parts[-1].endswith("```then more words")
