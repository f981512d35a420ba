"""Discord's text rules: splitting at 2,000 characters, thread and webhook names, emoji, custom ids."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from threadteam.adapters.discord.commands import choices
from threadteam.adapters.discord.text import (
    emoji_of,
    host_text,
    split_message,
    thread_name,
    webhook_username,
)
from threadteam.adapters.discord.views import custom_id_for
from threadteam.teams.persona import Persona


def test_short_text_is_one_part() -> None:
    assert split_message("hello") == ["hello"]
    assert split_message("") == []


def test_cuts_fall_at_paragraphs_first() -> None:
    paras = ["a" * 900, "b" * 900, "c" * 900]
    assert split_message("\n\n".join(paras)) == ["a" * 900 + "\n\n" + "b" * 900, "c" * 900]


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    parts = split_message("x" * 4500)
    assert [len(p) for p in parts] == [1996, 1996, 508]


def test_a_cut_inside_a_code_block_closes_and_reopens_it() -> None:
    code = "```python\n" + "\n".join(f"print({i})" for i in range(400)) + "\n```"
    parts = split_message("Here is the script:\n\n" + code)
    assert len(parts) >= 3
    for part in parts[1:]:
        assert part.count("```") % 2 == 0, part[:40]
    assert parts[2].startswith("```python\n")


@given(st.text(alphabet=st.sampled_from("ab \n`"), max_size=7000))
def test_parts_fit_and_keep_every_word_in_order(text: str) -> None:
    parts = split_message(text)
    assert all(len(p) <= 2000 for p in parts)
    assert "".join("".join(parts).split()).replace("`", "") == \
        "".join(text.split()).replace("`", "")


def test_thread_names_are_one_line_within_100() -> None:
    assert thread_name("Should we\nmigrate?") == "Should we migrate?"
    long = thread_name("word " * 60)
    assert len(long) <= 100 and long.endswith("…")


def test_webhook_names_follow_discord_rules() -> None:
    assert webhook_username(Persona("Bear", ":bear:")) == "🐻 Bear"
    assert webhook_username(Persona("Bull", "https://x/bull.png")) == "Bull"
    assert webhook_username(Persona("Mystery", ":not_an_emoji:")) == "Mystery"
    assert "discord" not in webhook_username(Persona("Discord Expert")).lower()
    assert len(webhook_username(Persona("n" * 200))) == 80


def test_emoji_avatars() -> None:
    assert emoji_of(Persona("A", ":scales:")) == "⚖️"
    assert emoji_of(Persona("A", "🦊")) == "🦊"
    assert emoji_of(Persona("A", "")) == ""
    assert emoji_of(Persona("A", "https://example.com/a.png")) == ""
    # What the persona calls an emoji, as the console shows it too: a sequence longer than
    # 8 code points (a kiss with skin tones, 10) is one; a word in another script is not.
    kiss = "\U0001f469\U0001f3fd\u200d\u2764\ufe0f\u200d\U0001f48b\u200d\U0001f468\U0001f3fb"
    for avatar in ("👩‍💻", "🇫🇷", "1️⃣", "👨‍👩‍👧‍👦", kiss):
        assert emoji_of(Persona("A", avatar)) == avatar == Persona("A", avatar).emoji
    assert webhook_username(Persona("A", kiss)) == f"{kiss} A"
    for word in ("日本", "é", "Ω"):
        assert emoji_of(Persona("A", word)) == "" and webhook_username(Persona("A", word)) == "A"


def test_custom_ids_fit_in_100_characters() -> None:
    assert custom_id_for("approve", "call_1") == ("tt:approve:call_1", False)
    long_id, hashed = custom_id_for("deny", "c" * 200)
    assert hashed and len(long_id) <= 100 and long_id.startswith("tt:deny:h.")


def test_autocomplete_matches_names_then_descriptions() -> None:
    teams = [("debate", "Bull and bear argue"), ("triage", "Support desk for bugs")]
    assert [c.value for c in choices(teams, "")] == ["debate", "triage"]
    assert [c.value for c in choices(teams, "TRI")] == ["triage"]
    assert [c.value for c in choices(teams, "bear")] == ["debate"]
    assert choices(teams, "")[0].name == "debate — Bull and bear argue"


def test_host_bold_becomes_discord_bold_and_the_rest_is_kept() -> None:
    assert host_text("*debate* is on it: Bull, Bear.") == "**debate** is on it: Bull, Bear."
    assert host_text("**already** bold, 2 * 3 * 4, snake_case*x") == \
        "**already** bold, 2 * 3 * 4, snake_case*x"
    assert host_text("Tell *triage* what to do: `triage <task>`") == \
        "Tell **triage** what to do: `triage <task>`"


# Text shaped to make backtracking formatters quadratic (issue 10): 40,000 characters each.
N = 40_000
PATHOLOGICAL = {
    "[a[a[a": "[a" * (N // 2),
    "**a **a": "**a " * (N // 4),
    " *a *a": " *a" * (N // 3),
    "backticks": "`" * N,
    "fences": "```\n" * (N // 4),
    "fence info": "```" + "a" * 1_500 + "\n" + ("b" * 1_990 + "\n") * 19,
    "<@<@": "<@" * (N // 2),
    "<#<#": "<#" * (N // 2),
    "@everyone": "@everyone " * (N // 10),
    "*a*": "*a*" * (N // 3),
    "_a_": "_a_" * (N // 3),
    "one word": "x" * N,
    "newline, spaces": "\n" + " " * N,
    "blank lines": "a\n \n" * (N // 4),
    "\\n\\t\\n": "\n\t" * (N // 2),
}


def worst_of_three(fn, text: str) -> float:
    best = float("inf")  # the least disturbed of three runs: what the code costs
    for _ in range(3):
        started = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("shape", PATHOLOGICAL)
def test_the_text_path_is_linear_on_pathological_input(shape: str) -> None:
    text = PATHOLOGICAL[shape]
    # An agent's turn posted as the bot (name in bold, then split) and a host notice.
    as_bot = worst_of_three(lambda t: split_message(f"🐻 **Bear**: {t}"), text)
    notice = worst_of_three(lambda t: split_message(host_text(t)), text)
    names = worst_of_three(lambda t: (thread_name(t), webhook_username(Persona(t))), text)
    # Quadratic code takes seconds here; linear takes a few milliseconds.
    assert max(as_bot, notice, names) < 0.1, (shape, as_bot, notice, names)
    parts = split_message(text)
    assert all(len(p) <= 2000 for p in parts)
