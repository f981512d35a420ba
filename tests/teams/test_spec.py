"""Team files: good ones load as written; broken ones are refused with file, line and problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threadteam.teams.errors import TeamFileError
from threadteam.teams.spec import load_team, parse_team
from threadteam.teams.termination import AnyOf, MaxMessages, TextMention

DEBATE = """\
name: debate
description: A bull and a bear argue; a synthesis agent weighs both and ends with FINAL ANSWER.
strategy: round_robin            # round_robin | selector | swarm
# model: openai:gpt-4o-mini      # optional team default; agents may set their own
agents:
  - name: bull
    persona: {display_name: Bull, avatar: ":ox:"}     # avatar: :emoji: or an https URL
    system_message: Argue the bull case for the topic. Be concrete.
  - name: bear
    persona: {display_name: Bear, avatar: ":bear:"}
    system_message: Argue the bear case for the topic. Be concrete.
  - name: synthesis
    persona: {display_name: Synthesis, avatar: ":scales:"}
    system_message: Read both sides. End with 'FINAL ANSWER:' and a balanced synthesis.
  # - name: you
  #   human: true                 # the person in the thread: the user-proxy participant
termination:
  any:
    - text_mention: FINAL ANSWER
    - max_messages: 12
"""

ANNOUNCE = """\
name: announce
strategy: swarm
model: openai:gpt-4o-mini
approvers: [U024BE7LH, "role:Moderators"]   # optional; default: whoever summoned the run
agents:
  - name: announcer
    persona: {display_name: Announcer, avatar: "https://example.com/mega.png", color: "#ff8800"}
    system_message: Draft the announcement, then post it.
    model: anthropic:claude-3-5-haiku-latest
    context: {messages: 10, tokens: 2000}
    tools:
      - post_message                                   # built-in, needs approval by default
      - {use: "tests.teams.sample_tools:create_ticket", approval: always}
      - {use: calculate, name: add_up}
    handoffs: [you]
  - name: you
    human: true
termination:
  handoff: you
"""


def refusal(text: str, source: str = "team.yaml") -> TeamFileError:
    with pytest.raises(TeamFileError) as caught:
        parse_team(textwrap.dedent(text), source)
    return caught.value


def test_the_issue_example_loads_as_written():
    team = parse_team(DEBATE, "debate.yaml")
    assert team.name == "debate" and team.strategy == "round_robin"
    assert [a.name for a in team.agents] == ["bull", "bear", "synthesis"]
    assert team.by_name["bear"].persona.display_name == "Bear"
    assert team.by_name["bear"].persona.avatar_emoji == ":bear:"
    assert team.by_name["synthesis"].system_message.startswith("Read both sides.")
    assert team.humans == ()
    condition = team.termination()
    assert isinstance(condition, AnyOf)
    assert isinstance(condition.children[0], TextMention)
    assert condition.children[0].text == "FINAL ANSWER"
    assert isinstance(condition.children[1], MaxMessages) and condition.children[1].limit == 12


def test_tools_approvers_models_context_and_the_human_load():
    team = parse_team(ANNOUNCE, "announce.yaml")
    announcer = team.by_name["announcer"]
    assert team.approvers == ("U024BE7LH", "role:Moderators")
    assert team.model == "openai:gpt-4o-mini" and announcer.model == "anthropic:claude-3-5-haiku-latest"
    assert announcer.persona.avatar_url == "https://example.com/mega.png"
    assert announcer.persona.color == "#ff8800"
    assert (announcer.context_messages, announcer.context_tokens) == (10, 2000)
    assert {t.name: t.approval for t in announcer.tools} == {
        "post_message": "always", "create_ticket": "always", "add_up": "never"}
    assert announcer.handoffs == ("you",)
    assert team.humans == ("you",)
    assert team.by_name["you"].persona.display_name == "You"


def test_defaults_fill_in_what_a_file_leaves_out():
    team = parse_team(textwrap.dedent("""\
        name: tiny
        agents:
          - name: code_reviewer
            system_message: Review the diff. Point out bugs first, then style.
        termination: {max_messages: 2}
    """))
    reviewer = team.by_name["code_reviewer"]
    assert team.strategy == "round_robin"
    assert reviewer.persona.display_name == "Code Reviewer"
    assert reviewer.description == "Review the diff."
    assert reviewer.context_messages == 40 and reviewer.context_tokens is None
    assert team.max_tool_rounds == 5 and not team.allow_repeated_speaker


@pytest.mark.parametrize(("text", "line", "problem"), [
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
            sytem_message: y
        termination: {max_messages: 2}
        """, 5, "unknown key 'sytem_message' in agents.0 (did you mean 'system_message'?)",
        id="unknown key in an agent"),
    pytest.param("""\
        name: t
        colour: red
        agents:
          - name: a
            system_message: x
        termination: {max_messages: 2}
        """, 2, "unknown key 'colour'", id="unknown key at the top"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            persona: {display_name: A, colour: red}
            system_message: x
        termination: {max_messages: 2}
        """, 4, "unknown key 'colour' in agents.0.persona (did you mean 'color'?)",
        id="unknown key in a persona"),
    pytest.param("""\
        name: t
        strategy: magentic
        orchestrator: {max_stall: 2}
        agents:
          - {name: a, description: Does it., system_message: x}
        termination: {max_messages: 2}
        """, 3, "unknown key 'max_stall' in orchestrator (did you mean 'max_stalls'?)",
        id="a near miss is named"),
    pytest.param("""\
        name: t
        strategy: swarm
        agents:
          - name: a
            system_message: x
            handoffs: [b, c]
          - name: b
            system_message: y
        termination: {max_messages: 2}
        """, 6, "hands off to unknown agent 'c'; agents are: a, b", id="unknown agent in a handoff"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
            handoffs: [b]
          - name: b
            system_message: y
        termination: {max_messages: 2}
        """, 5, "handoffs only apply with strategy: swarm", id="handoffs outside a swarm"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
          - name: b
            persona: {display_name: B}
        termination: {max_messages: 2}
        """, 5, "agent 'b' has no system_message", id="missing system message"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: "   "
        termination: {max_messages: 2}
        """, 3, "agent 'a' has no system_message", id="blank system message"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        """, 1, "missing required key 'termination'", id="no termination"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        termination:
          any:
            - text_mention: DONE
            - max_mesages: 3
        """, 8, "unknown termination condition 'max_mesages'", id="misspelt condition"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        termination:
          any:
            - text_mention: DONE
            - all:
                - stop: true
                - max_messages: -2
        """, 10, "max_messages must be a positive number, got -2", id="bad nested condition"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        termination:
          any:
            - max_messages: 3
            - source_match: [zed]
        """, 8, "'zed' is not an agent of this team; agents are: a", id="condition names no agent"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        termination:
          - max_messages: 3
          - text_mention: {text: DONE, sources: [b]}
        """, 7, "'b' is not an agent of this team", id="text mention from no agent"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        termination: {tool_call: launch}
        """, 5, "no agent has a tool named 'launch'", id="condition names no tool"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        termination: {any: []}
        """, 5, "'any' takes a non-empty list of conditions", id="empty any"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        termination: {max_messages: 3, stop: true}
        """, 5, "mapping with one key", id="two conditions in one mapping"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        termination: {timeout: soon}
        """, 5, "timeout", id="bad timeout"),
    pytest.param("""\
        name: t
        strategy: democracy
        agents:
          - name: a
            system_message: x
        termination: {max_messages: 2}
        """, 2, "strategy: input should be 'round_robin', 'selector', 'swarm' or 'magentic'", id="bad strategy"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: [unclosed
        termination: {max_messages: 2}
        """, 5, "not valid YAML", id="YAML syntax"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
        name: u
        termination: {max_messages: 2}
        """, 5, "duplicate key 'name'", id="duplicate key"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
          - name: a
            system_message: y
        termination: {max_messages: 2}
        """, 5, "agent name 'a' is used twice", id="duplicate agent"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            persona: {avatar: "http://example.com/a.png"}
            system_message: x
        termination: {max_messages: 2}
        """, 4, "avatar must be an :emoji: name, an emoji such as", id="avatar over http"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            persona: {avatar: ox}
            system_message: x
        termination: {max_messages: 2}
        """, 4, "avatar must be an :emoji: name, an emoji such as", id="avatar without colons"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
            tools: [calculate, launch_rockets]
        termination: {max_messages: 2}
        """, 5, "unknown tool 'launch_rockets'", id="unknown tool"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
            tools:
              - calculate
              - {use: "tests.teams.sample_tools:nothing_here"}
        termination: {max_messages: 2}
        """, 7, "has no function 'nothing_here'", id="module without the function"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
            tools: ["no_such_module_here:fn"]
        termination: {max_messages: 2}
        """, 5, "cannot import module 'no_such_module_here'", id="missing module"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
            tools:
              - {use: calculate, approval: sometimes}
        termination: {max_messages: 2}
        """, 6, "approval: input should be 'never' or 'always'", id="bad approval"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
            tools:
              - {use: calculate, name: "add up"}
        termination: {max_messages: 2}
        """, 6, "agents.0.tools.0.name", id="bad tool name override"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            persona: Alice
            system_message: x
        termination: {max_messages: 2}
        """, 4, "agents.0.persona: expected a mapping", id="persona not a mapping"),
    pytest.param("""\
        name: t
        agents:
          - name: a
            system_message: x
            tools: calculate
        termination: {max_messages: 2}
        """, 5, "agents.0.tools: expected a list", id="tools not a list"),
    pytest.param("""\
        name: t
        agents:
          - name: you
            human: true
        termination: {max_messages: 2}
        """, 2, "at least one agent that is not human", id="only a human"),
    pytest.param("""\
        name: t
        strategy: swarm
        agents:
          - name: you
            human: true
          - name: a
            system_message: x
        termination: {max_messages: 2}
        """, 4, "in a swarm the first agent speaks first", id="swarm led by the human"),
    pytest.param("""\
        name: t
        agents:
          - name: "two words"
            system_message: x
        termination: {max_messages: 2}
        """, 3, "names use letters, digits", id="bad agent name"),
    pytest.param("""\
        name: t
        ? [a, b]
        : c
        """, 2, "a key must be a plain word", id="complex key"),
    pytest.param("- just\n- a list\n", 1, "a team file is a mapping", id="not a mapping"),
])
def test_a_broken_file_is_refused_with_file_line_and_problem(text, line, problem):
    err = refusal(text, "teams/broken.yaml")
    assert (err.file, err.line) == ("teams/broken.yaml", line), str(err)
    assert problem in err.problem
    assert str(err).startswith(f"teams/broken.yaml:{line}: ")
    assert "Traceback" not in str(err) and "pydantic" not in str(err).lower()


def test_an_empty_file_is_refused():
    err = refusal("")
    assert "a team file is a mapping" in err.problem


def test_load_team_names_the_path(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nagents:\n  - name: a\n    sytem_message: x\ntermination: {stop: true}\n")
    with pytest.raises(TeamFileError) as caught:
        load_team(path)
    assert str(caught.value).startswith(f"{path}:4: unknown key 'sytem_message'")


def test_unreadable_files_are_refused_without_a_traceback(tmp_path: Path):
    with pytest.raises(TeamFileError, match="cannot read the file"):
        load_team(tmp_path / "missing.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(TeamFileError, match="not UTF-8"):
        load_team(latin1)


def test_every_problem_of_a_file_is_reported_each_with_its_line():
    err = refusal("""\
        name: t
        strategy: democracy
        agents:
          - name: a
            sytem_message: x
          - name: b
            persona: {avatar: ox}
            system_message: y
        termination: {max_mesages: 3}
        """, "teams/many.yaml")
    assert err.problems == (
        (2, "strategy: input should be 'round_robin', 'selector', 'swarm' or 'magentic'"),
        (5, "unknown key 'sytem_message' in agents.0 (did you mean 'system_message'?)"),
        (7, 'agents.1.persona.avatar: avatar must be an :emoji: name, an emoji such as "🐂", '
            'or an https:// URL'),
        (9, "bad termination: unknown termination condition 'max_mesages'; use one of: "
            "text_mention, max_messages, token_usage, timeout, source_match, handoff, stop, "
            "tool_call, any, all"))
    assert str(err).splitlines() == [f"teams/many.yaml:{line}: {problem}"
                                     for line, problem in err.problems]
    assert (err.line, err.problem) == err.problems[0]


def test_problems_found_after_the_shape_is_right_are_all_reported_too():
    err = refusal("""\
        name: t
        strategy: swarm
        agents:
          - name: a
            system_message: x
            handoffs: [zed]
            tools: [calculate, launch_rockets]
          - name: b
          - name: a
            system_message: z
        termination:
          any:
            - source_match: [nobody]
            - tool_call: launch_rockets
        approval: {quorum: 2}
        """)
    lines = [line for line, _ in err.problems]
    assert lines == sorted(lines)
    found = dict(err.problems)
    assert "hands off to unknown agent 'zed'" in found[6]
    assert "unknown tool 'launch_rockets'" in found[7]
    assert "agent 'b' has no system_message" in found[8]
    assert "agent name 'a' is used twice" in found[9]
    assert "'nobody' is not an agent of this team" in found[13]
    assert "no agent has a tool named 'launch_rockets'" in found[14]
    assert "approval.quorum is 2" in found[15]


@pytest.mark.parametrize(("value", "line"), [
    ("Note: be brief.", 4),
    ("*important* words", 4),
    ("&you too", 4),
])
def test_a_yaml_syntax_error_says_how_to_fix_the_usual_cause(value, line):
    err = refusal(f"""\
        name: t
        agents:
          - name: a
            system_message: {value}
        termination: {{max_messages: 2}}
        """)
    assert err.line == line, str(err)
    assert err.problem.endswith("(hint: quote values that contain `: ` or start with `*`, `&`, `?`)")
    quoted = parse_team(textwrap.dedent(f"""\
        name: t
        agents:
          - name: a
            system_message: "{value}"
        termination: {{max_messages: 2}}
        """))
    assert quoted.agents[0].system_message == value, "quoting, as the hint says, is the fix"


@pytest.mark.parametrize("avatar", ["🐂", "🐻‍❄️", "👩🏽‍💻", "🇫🇷", "1️⃣", "⚖️"])
def test_an_emoji_avatar_is_accepted_as_written(avatar):
    team = parse_team(textwrap.dedent(f"""\
        name: t
        agents:
          - name: bull
            persona: {{display_name: Bull, avatar: "{avatar}"}}
            system_message: Argue for.
        termination: {{max_messages: 2}}
        """))
    persona = team.agents[0].persona
    assert persona.avatar == avatar and persona.emoji == avatar
    assert persona.avatar_emoji is None and persona.avatar_url is None


@pytest.mark.parametrize("avatar", ["ox", "🐂 ox", "→", "🐂" * 20])
def test_words_and_other_symbols_are_not_emoji_avatars(avatar):
    err = refusal(f"""\
        name: t
        agents:
          - name: bull
            persona: {{avatar: "{avatar}"}}
            system_message: Argue for.
        termination: {{max_messages: 2}}
        """)
    assert err.line == 4 and "avatar must be" in err.problem


def test_the_other_avatar_forms_are_not_emoji_characters():
    team = parse_team(ANNOUNCE, "announce.yaml")
    assert team.by_name["announcer"].persona.emoji is None
    assert parse_team(DEBATE).by_name["bull"].persona.emoji is None


def test_yaml_tags_are_not_executed():
    err = refusal("!!python/object/apply:os.system ['echo hacked']\n")
    assert err.line is not None


ALIAS_BOMB = """\
name: bomb
description: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
agents: [*g]
termination: {stop: true}
"""


def test_an_alias_bomb_is_refused_at_once_with_its_line():
    import time

    start = time.perf_counter()
    err = refusal(ALIAS_BOMB, "bomb.yaml")
    assert time.perf_counter() - start < 0.5, "refused before anything is expanded"
    assert (err.file, err.line) == ("bomb.yaml", 2)
    assert "anchors and aliases" in err.problem and "not allowed" in err.problem


def test_a_value_that_contains_itself_is_refused_not_a_recursion_error(tmp_path: Path):
    path = tmp_path / "loop.yaml"
    path.write_text("name: loop\nagents: &me\n  - *me\ntermination: {stop: true}\n")
    with pytest.raises(TeamFileError) as caught:
        load_team(path)
    assert str(caught.value).startswith(f"{path}:2: anchors and aliases")


def test_an_alias_anywhere_is_refused_even_a_harmless_one():
    err = refusal("""\
        name: t
        agents:
          - {name: a, system_message: &msg Say hi.}
          - {name: b, system_message: *msg}
        termination: {stop: true}
        """)
    assert err.line == 3 and "write each value out in full" in err.problem


# Any value anywhere in a valid file: the result is a team or a TeamFileError, never a traceback.
_VALID = yaml.safe_load(ANNOUNCE)
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False)
    | st.sampled_from(["", "a", "you", "announcer", ":ox:", "calculate", "os:path", "1x", "-"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["name", "use", "any", "all", "text", "stop", "x"]), inner,
                      max_size=2),
    max_leaves=6)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _replaced(node, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {k: (_replaced(v, rest, value) if k == head else v) for k, v in node.items()}
    return [(_replaced(v, rest, value) if i == head else v) for i, v in enumerate(node)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(list(_paths(_VALID))[1:]), value=_JSONISH)
def test_any_damage_is_reported_never_raised_as_a_crash(where, value):
    text = yaml.safe_dump(_replaced(_VALID, where, value), sort_keys=False)
    try:
        parse_team(text, "fuzzed.yaml")
    except TeamFileError as err:
        assert err.file == "fuzzed.yaml" and err.problem


def test_an_unknown_key_close_to_no_known_one_is_named_without_a_guess():
    err = refusal("""\
        name: t
        colour: red
        agents:
          - name: a
            system_message: x
            banana: 3
        termination: {max_messages: 2}
        """)
    assert err.problems == ((2, "unknown key 'colour'"), (6, "unknown key 'banana' in agents.0"))
