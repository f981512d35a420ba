"""The `threadteam` command as a newcomer meets it: help, team files, settings, a piped chat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from threadteam.bot.logs import redact

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without model keys or threadteam/OTel settings, plus `extra`."""
    return {**{k: v for k, v in os.environ.items()
               if not k.startswith(("OPENAI_", "ANTHROPIC_", "THREADTEAM_", "OTEL_"))}, **extra}


def threadteam(*args: str, stdin: str = "", env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "threadteam.adapters.cli", *args], input=stdin, text=True,
                          capture_output=True, timeout=timeout, cwd=ROOT,
                          env=clean_env(**(env or {})))


@pytest.mark.parametrize("args", [(), ("--help",), ("chat", "--help"), ("run", "--help"),
                                  ("run", "slack", "--help"), ("run", "discord", "--help"),
                                  ("teams", "--help"), ("teams", "check", "--help")])
def test_every_command_has_help(args):
    result = threadteam(*args)
    assert result.returncode == 0, result.stderr
    assert "usage: threadteam" in result.stdout


def test_help_shows_the_default_store_path():
    out = threadteam("chat", "--help").stdout
    assert "THREADTEAM_STORE" in out and "threadteam.sqlite3" in out


#: Client libraries only some commands need; each costs a tenth of a second or more to import.
HEAVY = ("discord", "slack_bolt", "slack_sdk", "redis", "aiohttp", "mcp", "openai", "anthropic")
#: Runs the command in-process, then prints the heavy libraries it imported.
LOADED = ("import atexit, sys\n"
          "atexit.register(lambda: print('loaded:', *sorted(\n"
          f"    m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr))\n"
          "from threadteam.adapters.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


@pytest.mark.parametrize("args, loaded", [
    (("--help",), ""),
    (("run", "slack", "--help"), ""),
    (("teams", "list"), ""),
    (("chat", "--team", "debate", "is", "this", "quick?"), ""),
    (("run", "discord", "--print-invite"), "aiohttp discord"),
])
def test_a_command_imports_only_the_client_libraries_it_uses(tmp_path, args, loaded):
    # A console chat on the embedded store with no API key: no platform, Redis, MCP or
    # model client; `run discord` loads discord.py (and its aiohttp), nothing else.
    env = clean_env(THREADTEAM_STORE=f"sqlite:///{tmp_path}/s.db", DISCORD_APPLICATION_ID="42")
    result = subprocess.run([sys.executable, "-c", LOADED, *args], text=True, env=env,
                            capture_output=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == f"loaded: {loaded}".strip()


def test_teams_check_names_file_and_line(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: solo\nagents:\n  - {name: a, system_message: Hi.}\n"
                    "termination: {max_messages: 2}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nagents:\n  - name: a\n    sytem_message: Hi.\n"
                   "termination: {max_messages: 2}\n")
    result = threadteam("teams", "check", str(good), str(bad))
    assert result.returncode == 1
    assert f"{good}: ok" in result.stdout
    assert f"{bad}:4: unknown key 'sytem_message'" in result.stderr
    assert "Traceback" not in result.stderr
    assert threadteam("teams", "check", str(good)).returncode == 0


def test_teams_list_shows_builtins_and_user_teams(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "name: mine\ndescription: My own team.\nagents:\n  - {name: a, system_message: Hi.}\n"
        "termination: {max_messages: 2}\n")
    (tmp_path / "broken.yaml").write_text("name: [\n")
    result = threadteam("teams", "list", "--teams-dir", str(tmp_path))
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["analyst", "announce", "debate", "mine", "research", "triage"]
    [problem] = result.stderr.splitlines()
    assert problem.startswith("skipped ") and "broken.yaml:2: not valid YAML" in problem


@pytest.mark.parametrize(("command", "env", "message"), [
    (("runs", "list"), {"THREADTEAM_STORE": "postgres://x"},
     "THREADTEAM_STORE must be sqlite:///path or redis://"),
    (("chat", "x"), {"THREADTEAM_MODEL": "gpt4"}, "THREADTEAM_MODEL must look like openai:"),
    (("chat", "x"), {"THREADTEAM_MODEL": "rehearsalx"},
     "THREADTEAM_MODEL must look like openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest "
     "or rehearsal, got 'rehearsalx'"),
    (("chat", "x"), {"THREADTEAM_MODEL": "rehearsal:foo"},
     "THREADTEAM_MODEL must look like openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest "
     "or rehearsal, got 'rehearsal:foo'"),
    (("chat", "--model", "anthropic:", "x"), {}, "--model must look like openai:"),
    (("teams", "list"), {"THREADTEAM_TEAMS_DIR": "/nonexistent/teams"},
     "THREADTEAM_TEAMS_DIR is '/nonexistent"),
    (("chat", "x"), {"THREADTEAM_LEASE_TTL": "soon"},
     "THREADTEAM_LEASE_TTL must be a positive number"),
    (("run", "discord"), {"THREADTEAM_MAX_RUNS_PER_HOUR": "lots"},
     "THREADTEAM_MAX_RUNS_PER_HOUR must be a whole number above 0, got 'lots'"),
    (("run", "discord"), {"THREADTEAM_MAX_ACTIVE_RUNS_PER_USER": "0"},
     "THREADTEAM_MAX_ACTIVE_RUNS_PER_USER must be a whole number above 0"),
    (("run", "discord"), {"THREADTEAM_LOG_LEVEL": "loud"},
     "THREADTEAM_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'loud'"),
])
def test_a_wrong_setting_is_one_line_naming_the_variable(command, env, message, tmp_path):
    env = {"THREADTEAM_STORE": f"sqlite:///{tmp_path}/s.db", **env}
    result = threadteam(*command, env=env)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not result.stdout, "nothing ran: the setting was refused at start"


def test_settings_a_command_does_not_use_do_not_stop_it(tmp_path):
    wrong = {"THREADTEAM_STORE": "postgres://x", "THREADTEAM_MODEL": "rehearsalx",
             "THREADTEAM_LEASE_TTL": "soon", "THREADTEAM_LOG_LEVEL": "loud",
             "THREADTEAM_MAX_RUNS_PER_HOUR": "lots"}
    listed = threadteam("teams", "list", env=wrong)
    assert listed.returncode == 0, listed.stderr
    assert "debate" in listed.stdout and not listed.stderr
    runs = threadteam("runs", "list", "--store", f"sqlite:///{tmp_path}/s.db", env=wrong)
    assert runs.returncode == 0 and not runs.stderr, runs.stderr


@pytest.mark.parametrize("port", ["abc", ""])
def test_a_wrong_port_stops_only_the_command_that_serves_http(port, tmp_path):
    listed = threadteam("teams", "list", env={"PORT": port})
    assert listed.returncode == 0 and "debate" in listed.stdout, listed.stderr
    chat = threadteam("chat", "--store", f"sqlite:///{tmp_path}/s.db", "x", env={"PORT": port})
    assert chat.returncode == 0 and "Traceback" not in chat.stderr, chat.stderr
    served = threadteam("run", "slack", env={"PORT": "abc", "SLACK_BOT_TOKEN": "xoxb-1-2-x"})
    assert served.returncode == 2
    assert served.stderr.strip() == ("threadteam: PORT must be a port number from 0 to 65535 "
                                     "(or unset for 3000), got 'abc'")


def test_version_and_help_offer_what_is_there():
    version = threadteam("--version")
    assert version.returncode == 0 and version.stdout.strip() == "threadteam 0.1.0"
    teams_help = threadteam("teams", "list", "--help").stdout
    assert "--teams-dir" in teams_help
    assert "--store" not in teams_help and "--model" not in teams_help
    runs_help = threadteam("runs", "show", "--help").stdout
    assert "--store" in runs_help and "--teams-dir" not in runs_help


def test_unknown_team_lists_the_teams(tmp_path):
    result = threadteam("chat", "--team", "debat", "--store", f"sqlite:///{tmp_path}/s.db", "x")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "threadteam: there is no team called 'debat'. Choose one with `--team NAME`: analyst, "
        "announce, debate, research, triage (`threadteam teams list` says what each does).")


def team_files(tmp_path: Path, **texts: str) -> Path:
    """A teams folder holding `<name>.yaml` for each text."""
    teams = tmp_path / "teams"
    teams.mkdir()
    for name, text in texts.items():
        (teams / f"{name}.yaml").write_text(text)
    return teams


def test_a_team_whose_file_is_broken_says_why_it_is_not_there(tmp_path):
    teams = team_files(tmp_path, res="name: res\ndescription: Research.\nstrategy: magentic\n"
                       "orchestrator:\n  max_stall: 3\nagents:\n  - name: researcher\n"
                       "    description: Finds facts.\n")
    store = f"sqlite:///{tmp_path}/s.db"
    result = threadteam("chat", "--team", "res", "--teams-dir", str(teams), "--store", store, "x")
    assert result.returncode == 2
    assert "there is no team called 'res': its file could not be loaded" in result.stderr
    assert f"{teams / 'res.yaml'}:5: unknown key 'max_stall' in orchestrator" in result.stderr
    assert "Traceback" not in result.stderr
    other = threadteam("chat", "--team", "resarch", "--teams-dir", str(teams), "--store", store,
                       "x")
    assert other.returncode == 2 and "Choose one with `--team NAME`" in other.stderr
    assert f"Team files that could not be loaded: {teams / 'res.yaml'}" in other.stderr


def test_piped_chat_runs_on_rehearsal_and_says_so(tmp_path):
    store = f"sqlite:///{tmp_path}/s.db"
    result = threadteam("chat", "--store", store, "Should we migrate billing to Postgres?")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    posts = [line.split(":")[0] for line in lines if line.startswith(("Bull:", "Bear:", "Synth"))]
    assert posts == ["Bull", "Bear", "Synthesis"]
    assert "rehearsal text" in result.stdout
    assert lines[-1].startswith("threadteam: Finished: synthesis said 'FINAL ANSWER'")
    assert "\x1b[" not in result.stdout, "no colour codes when stdout is not a terminal"


def test_piped_lines_answer_the_human_turn_and_resume_works(tmp_path):
    teams = team_files(tmp_path, pair="name: pair\nagents:\n  - {name: helper, system_message: "
                       "Help.}\n  - {name: you, human: true}\ntermination: {max_messages: 5}\n")
    env = {"THREADTEAM_STORE": f"sqlite:///{tmp_path}/s.db", "THREADTEAM_TEAMS_DIR": str(teams)}
    first = threadteam("chat", "--team", "pair", "Plan a trip.", stdin="Somewhere warm\n", env=env)
    assert first.returncode == 0, first.stderr
    assert "pick it up with `threadteam chat --resume`" in first.stderr
    assert "Helper: [rehearsal] helper on 'Somewhere warm'" in first.stdout
    second = threadteam("chat", "--resume", stdin="By train\n", env=env)
    assert second.returncode == 0, second.stderr
    assert "Helper: [rehearsal] helper on 'By train'" in second.stdout
    assert "Finished: 5 messages reached" in second.stdout


def test_a_missing_key_is_reported_in_the_thread_naming_the_variable(tmp_path):
    result = threadteam("chat", "--model", "anthropic:claude-3-5-haiku-latest",
                        "--store", f"sqlite:///{tmp_path}/s.db", "x")
    assert "could not go on" in result.stdout
    assert "ANTHROPIC_API_KEY" in result.stdout and "retry" in result.stdout


def test_secrets_never_reach_logs():
    env = {"SLACK_BOT_TOKEN": "xoxb-" + "1234567890-abcdefghij", "OPENAI_API_KEY": "sk-proj-Zz9" * 4}
    text = (f"failed with token {env['SLACK_BOT_TOKEN']} and key {env['OPENAI_API_KEY']} "
            f"via redis://:hunter2@host:6379/0")
    cleaned = redact(text, env)
    for secret in (env["SLACK_BOT_TOKEN"], env["OPENAI_API_KEY"], "hunter2"):
        assert secret not in cleaned
    assert "redis://***@host:6379/0" in cleaned


def test_runs_show_prints_every_approval_decision_for_an_audit(tmp_path):
    import asyncio

    from threadteam.bot.stores import open_store
    from threadteam.teams.events import (
        AgentMessage,
        ApprovalDecided,
        TaskStarted,
        ToolCallRequested,
        ToolResult,
        to_json,
    )

    url = f"sqlite:///{tmp_path}/s.db"
    t = 1_790_000_000.0
    events = [
        TaskStarted(team="announce", task="announce the launch", by="U1", at=t),
        AgentMessage(agent="announcer", text="Posting now.", at=t + 1),
        ToolCallRequested(agent="announcer", call_id="c1", tool="post_message",
                          args={"channel": "#general", "text": "Hi all"}, needs_approval=True,
                          at=t + 2),
        ApprovalDecided(call_id="c1", approved=True, by="U2", reason="looks right", at=t + 60),
        ToolResult(call_id="c1", output="Posted to #general (message 5).", at=t + 61),
    ]

    async def seed() -> None:
        store = open_store(url)
        await store.start()
        await store.create_run("feedc0de" * 4, "slack:T1:C1:1.0", [to_json(e) for e in events])
        await store.aclose()

    asyncio.run(seed())
    listed = threadteam("runs", "list", "--store", url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("feedc0de" * 4) and "announce" in listed.stdout

    shown = threadteam("runs", "show", "feedc0de", "--store", url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"run {'feedc0de' * 4} in slack:T1:C1:1.0 (running)"
    assert ('announcer asks to run post_message (needs approval), call c1, arguments: '
            '{"channel": "#general", "text": "Hi all"}') in shown.stdout
    [decision] = [line for line in lines if "APPROVED" in line]
    assert decision.endswith("APPROVED post_message call c1 by U2: looks right")
    assert decision.startswith("2026-09-21 ")

    missing = threadteam("runs", "show", "nope", "--store", url)
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_runs_list_and_show_a_run_a_newer_version_wrote_to_without_a_traceback(tmp_path):
    """After a downgrade a run's log may hold an event this version does not know: the
    audit still lists the run and shows that event as stored, among the ones it reads."""
    import asyncio

    from threadteam.bot.stores import open_store
    from threadteam.teams.events import HumanMessage, TaskStarted, to_json

    url = f"sqlite:///{tmp_path}/s.db"
    future = '{"kind":"from_the_future","by":"U9","at":1790000003.0}'
    raw = [to_json(TaskStarted(team="debate", task="Migrate?", by="U1", at=1_790_000_000.0)),
           future,
           to_json(HumanMessage(user="U2", text="still here", at=1_790_000_004.0))]

    async def seed() -> None:
        store = open_store(url)
        await store.start()
        await store.create_run("0ddba11" * 4, "slack:T1:C1:2.0", raw)
        await store.aclose()

    asyncio.run(seed())
    listed = threadteam("runs", "list", "--store", url)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "0ddba11" * 4 in listed.stdout and " unreadable " in listed.stdout
    shown = threadteam("runs", "show", "0ddba11", "--store", url)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == (f"run {'0ddba11' * 4} in slack:T1:C1:2.0 (holds events this version "
                        "of threadteam cannot read)")
    assert lines[2] == "?                    (an event this version cannot read) " + future
    assert lines[3].endswith("U2 (U2): still here")


def test_runs_show_finds_a_run_by_its_start_and_says_when_that_is_ambiguous(tmp_path):
    import asyncio

    from threadteam.bot.stores import open_store
    from threadteam.teams.events import TaskStarted, to_json

    url = f"sqlite:///{tmp_path}/s.db"

    async def seed() -> None:
        store = open_store(url)
        await store.start()
        for i, run_id in enumerate(["beef01", "beef02", "cafe01"]):
            start = TaskStarted(team="debate", task=f"Task {run_id}", by="U1", at=1.0 + i)
            await store.create_run(run_id, f"slack:T1:C1:{i}.0", [to_json(start)])
        await store.aclose()

    asyncio.run(seed())
    both = threadteam("runs", "show", "beef", "--store", url)
    assert both.returncode == 1 and both.stdout == ""
    assert both.stderr == ("threadteam: 'beef' is the start of 2 runs (beef02, beef01); give "
                           "more of it\n")
    one = threadteam("runs", "show", "caf", "--store", url)
    assert one.returncode == 0 and "summoned debate: Task cafe01" in one.stdout


async def test_runs_show_finds_a_run_by_its_whole_id_however_old(tmp_path, monkeypatch):
    """A start is looked for among the latest runs only; a whole id is found whatever
    number of runs came after it."""
    from threadteam.bot import audit
    from threadteam.bot.stores import open_store
    from threadteam.teams.events import TaskStarted, to_json

    monkeypatch.setattr(audit, "RECENT", 2)
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    await store.start()
    try:
        for i, run_id in enumerate(["old", "newer", "newest"]):
            start = TaskStarted(team="debate", task=f"Task {run_id}", by="U1", at=1.0 + i)
            await store.create_run(run_id, f"slack:T1:C1:{i}.0", [to_json(start)])
        shown = await audit.transcript(store, "old")
        assert await audit.transcript(store, "ol") is None  # not among the 2 latest
    finally:
        await store.aclose()
    assert shown is not None and "summoned debate: Task old" in shown


async def test_runs_show_reads_a_magentic_run_as_plans_checks_and_instructions(tmp_path):
    from threadteam.bot.audit import transcript
    from threadteam.bot.stores import open_store
    from threadteam.teams.events import (
        Instructed,
        PlanReviewed,
        PlanWritten,
        ProgressAssessed,
        TaskStarted,
        to_json,
    )
    from threadteam.teams.models.base import Usage

    def check(done: bool, next_speaker: str, say: str) -> dict:
        return {"is_request_satisfied": {"reason": "not yet", "answer": done},
                "is_in_loop": {"reason": "new ground", "answer": False},
                "is_progress_being_made": {"reason": "facts came in", "answer": True},
                "next_speaker": {"reason": "it is their step", "answer": next_speaker},
                "instruction_or_question": {"reason": "be brief", "answer": say}}

    events = [
        TaskStarted(team="research", task="tides", by="U1", at=1.0),
        PlanWritten(revision=1, facts="- tides follow the moon", plan="1. researcher: tables",
                    usage=Usage(90, 30), model="openai:gpt-4o", at=2.0),
        PlanReviewed(revision=1, by="U2", approved=False, changes="Ask the harbour master.",
                     display_name="Ann", at=3.0),
        PlanWritten(revision=2, facts="", plan="1. researcher: call the harbour master",
                    cause="review", at=4.0),
        PlanReviewed(revision=2, by="U2", approved=True, at=5.0),
        ProgressAssessed(ledger={}, problem="it is not a JSON object", reply="Sure!", at=6.0),
        ProgressAssessed(ledger=check(False, "researcher", "Call the harbour master."),
                         usage=Usage(200, 40), model="openai:gpt-4o", at=7.0),
        Instructed(agent="researcher", text="Call the harbour master.", at=7.0),  # a log of old
        ProgressAssessed(ledger=check(False, "writer", "Write it up."), hands_on=True, at=8.0),
    ]
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    await store.start()
    try:
        await store.create_run("abc123", "console:local:1", [to_json(e) for e in events])
        shown = await transcript(store, "abc")
    finally:
        await store.aclose()
    assert shown is not None
    assert "progress assessed:" not in shown and '{"' not in shown, "no raw JSON for an auditor"
    for line in ("orchestrator wrote plan 1  [120 tokens, openai:gpt-4o]",
                 "FACTS:", "- tides follow the moon", "1. researcher: tables",
                 "Ann (U2) asked for changes to plan 1: Ask the harbour master.",
                 "orchestrator wrote plan 2 with a person's changes",
                 "plan 2 approved by U2",
                 "progress check unusable: it is not a JSON object", "reply: Sure!",
                 "progress check  [240 tokens, openai:gpt-4o]", "done? no (not yet)",
                 "progress? yes (facts came in)", "next: researcher (it is their step)",
                 "orchestrator -> researcher: Call the harbour master.",
                 "to say: Write it up. (be brief)\n" + " " * 21 + "orchestrator -> writer: Write it up."):
        assert line in shown, line


def test_the_concurrency_benchmark_prints_no_figure_it_did_not_measure():
    import importlib.util

    if importlib.util.find_spec("autogen_agentchat") is not None:
        pytest.skip("the bench extra is installed here: AutoGen would be measured")
    result = subprocess.run([sys.executable, "benchmarks/concurrency.py", "--runs", "5",
                             "--store", "sqlite"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7.7 s" not in result.stdout and "142 MiB" not in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "AutoGen: not measured (its packages are not installed: pip install -e '.[bench]', "
        "then run this again)")


def test_every_benchmark_starts_as_the_readme_runs_it():
    """`.venv/bin/python benchmarks/NAME.py`, from the project's root, with no PYTHONPATH:
    each reads its options (vs_autogen only where AutoGen, the bench extra, is installed)."""
    import importlib.util

    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    if importlib.util.find_spec("autogen_agentchat") is None:
        scripts = [p for p in scripts if p.name != "vs_autogen.py"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    started = [(p.name, subprocess.Popen([sys.executable, str(p), "--help"], cwd=ROOT, env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)) for p in scripts]
    failed = {}
    for name, process in started:
        out, err = process.communicate(timeout=120)
        if process.returncode != 0 or not out.startswith("usage: "):
            failed[name] = err.strip().splitlines()[-1:] or out[:200]
    assert len(started) >= 12 and failed == {}


def test_the_concurrency_benchmark_starts_a_redis_server_of_its_own():
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_CLUSTER_URL")}
    result = subprocess.run([sys.executable, "benchmarks/concurrency.py", "--runs", "5",
                             "--store", "redis", "--no-autogen"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = [line.split() for line in result.stdout.splitlines() if " redis " in line]
    assert row[:2] == ["5", "redis"] and row[-5:] == ["30", "agent", "+", "10", "notices"]


def test_resume_of_a_run_whose_team_is_not_loaded_says_which_flag(tmp_path):
    teams = tmp_path / "myteams"
    teams.mkdir()
    (teams / "pair.yaml").write_text(
        "name: pair\ndescription: Plans with you.\nagents:\n"
        "  - {name: planner, persona: {display_name: Planner}, system_message: Plan.}\n"
        "  - {name: you, human: true}\ntermination: {text_mention: DONE}\n")
    env = {"THREADTEAM_STORE": f"sqlite:///{tmp_path}/s.db"}
    first = threadteam("chat", "--teams-dir", str(teams), "--team", "pair", "Plan a trip.",
                       env=env)
    assert first.returncode == 0, first.stderr
    again = threadteam("chat", "--resume", env=env)
    assert again.returncode == 2
    assert "its team 'pair' is not loaded from " in again.stderr
    assert f"pass --teams-dir {teams}" in again.stderr
    assert "Traceback" not in again.stderr and again.stderr.count("\n") <= 2


def test_resume_of_a_run_whose_team_file_was_edited_under_it_says_so(tmp_path):
    teams = tmp_path / "myteams"
    teams.mkdir()
    team = ("name: pair\ndescription: Plans with you.\nagents:\n"
            "  - {name: planner, persona: {display_name: Planner}, system_message: Plan.}\n"
            "  - {name: you, human: true}\ntermination: {text_mention: DONE}\n")
    (teams / "pair.yaml").write_text(team)
    env = {"THREADTEAM_STORE": f"sqlite:///{tmp_path}/s.db"}
    first = threadteam("chat", "--teams-dir", str(teams), "--team", "pair", "Plan a trip.",
                       env=env)
    assert first.returncode == 0, first.stderr
    (teams / "pair.yaml").write_text(team.replace("name: planner", "name: organiser"))
    again = threadteam("chat", "--teams-dir", str(teams), "--resume", env=env)
    assert again.returncode == 2
    said = again.stderr.rstrip().splitlines()[-1]  # after the log's line saying why in full
    assert said.startswith("Cannot resume run ") and said.endswith(
        "(Plan a trip.): its team `pair` was changed in a way that no longer fits what the run "
        "has done so far."), again.stderr
    assert "its history has agent 'planner', which the team no longer has" in again.stderr
    assert "not loaded" not in again.stderr and "Traceback" not in again.stderr


def test_teams_check_warns_about_a_role_named_rather_than_identified(tmp_path):
    team = tmp_path / "mods.yaml"
    team.write_text("name: mods\ndescription: Needs moderators.\napprovers: ['role:Moderators']\n"
                    "agents:\n  - {name: a, persona: {display_name: A}, system_message: Go.}\n"
                    "termination: {max_messages: 2}\n")
    result = threadteam("teams", "check", str(team))
    assert result.returncode == 0, result.stderr
    assert "mods.yaml: ok" in result.stdout
    assert f"{team}:3: warning:" in result.stderr and "role:Moderators" in result.stderr


def test_teams_check_of_two_files_with_one_team_name_names_both(tmp_path):
    text = ("name: twin\ndescription: a\nagents:\n"
            "  - {name: a, persona: {display_name: A}, system_message: Go.}\n"
            "termination: {max_messages: 2}\n")
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    result = threadteam("teams", "check", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert result.returncode == 1
    assert "b.yaml:1: team name 'twin' is already used by " in result.stderr
    assert "a.yaml" in result.stderr.split("already used by", 1)[1]
