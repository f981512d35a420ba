"""`run_code`: the local executor for real (limits, an empty environment, capped output, a
working directory that lasts the run), the docker executor against a stand-in `docker`
that records its arguments, the approval it always needs under `local`, and the built-in
analyst team reaching its approval on the rehearsal model."""

from __future__ import annotations

import itertools
import json
import os
import stat
import sys
import time

import pytest

from tests.teams.helpers import make_team
from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.code import OUTPUT_CAP, run_code
from threadteam.teams.engine import AwaitApproval, Env, drive
from threadteam.teams.events import Event, TaskStarted, ToolCallRequested
from threadteam.teams.models import ModelPool
from threadteam.teams.state import RunState
from threadteam.teams.tools import ToolContext


@pytest.fixture
def code_env(tmp_path, monkeypatch):
    monkeypatch.setenv("THREADTEAM_CODE_DIR", str(tmp_path / "code"))
    monkeypatch.setenv("THREADTEAM_CODE_EXECUTOR", "local")
    monkeypatch.setenv("THREADTEAM_CODE_TIMEOUT", "20")
    return tmp_path / "code"


async def run(code: str, run_id: str = "slack.run1", notices: list[str] | None = None) -> str:
    async def notice(text: str) -> None:
        if notices is not None:
            notices.append(text)
    return await run_code.invoke({"code": code}, ToolContext(run_id=run_id, notice=notice))


async def test_output_exit_code_and_a_short_line_for_the_thread(code_env):
    notices: list[str] = []
    out = await run("import sys\nprint('mean', sum([3, 4, 5]) / 3)\n"
                    "print('careful', file=sys.stderr)\nsys.exit(2)", notices=notices)
    assert out.startswith("exit code: 2")
    assert "mean 4.0" in out and "careful" in out.split("--- stderr ---")[1]
    assert notices == ["`run_code` exited with code 2; 1 line of output."]


async def test_the_working_directory_lasts_the_run_and_is_the_runs_own(code_env):
    await run("open('figures.csv', 'w').write('a,b\\n1,2\\n')")
    again = await run("print(open('figures.csv').read().strip())")
    assert "a,b\n1,2" in again
    elsewhere = await run("import os; print(os.path.exists('figures.csv'))", run_id="slack.run2")
    assert "False" in elsewhere
    assert (code_env / "slack.run1" / "figures.csv").exists()
    assert stat.S_IMODE((code_env / "slack.run1").stat().st_mode) == 0o700


async def test_the_code_sees_no_environment_of_the_bot(code_env, monkeypatch):
    secret = "sk-" + "5" * 30
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-" + "1" * 12)
    out = await run("import os, json; print(json.dumps(dict(os.environ)))")
    seen = json.loads(out.split("--- stdout ---\n")[1].split("\n--- stderr")[0])
    assert "OPENAI_API_KEY" not in seen and "SLACK_BOT_TOKEN" not in seen
    assert secret not in out
    assert set(seen) <= {"LC_CTYPE"}, seen  # only what Python itself sets


async def test_limits_on_cpu_memory_file_size_and_open_files_are_in_force(code_env, monkeypatch):
    monkeypatch.setenv("THREADTEAM_CODE_MEMORY_MB", "256")
    out = await run("import resource as r\n"
                    "for n in ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE'):\n"
                    "    print(n, r.getrlimit(getattr(r, n))[0])")
    assert "RLIMIT_CPU 20" in out
    assert f"RLIMIT_AS {256 * 1024 * 1024}" in out
    assert f"RLIMIT_FSIZE {64 * 1024 * 1024}" in out
    assert "RLIMIT_NOFILE 64" in out
    hog = await run("x = bytearray(1024 * 1024 * 1024)")
    assert hog.startswith("stopped: the memory limit of 256 MB was reached")
    big = await run("open('big', 'wb').write(b'0' * (65 * 1024 * 1024))")
    assert big.startswith("stopped: the file-size limit was reached")


def _has_landlock() -> bool:
    import ctypes
    return ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1) >= 1


@pytest.mark.skipif(not _has_landlock(), reason="this kernel has no Landlock")
async def test_where_the_kernel_allows_the_code_reaches_only_its_own_directory(code_env,
                                                                               tmp_path):
    outside = tmp_path / "the-bots-store.sqlite3"
    outside.write_text("runs and approvals")
    out = await run(
        "import json, os, statistics\n"  # the standard library still imports
        "print('mean', statistics.mean([1, 2, 3]))\n"
        "open('mine.txt', 'w').write('ok'); print('own dir', open('mine.txt').read())\n"
        f"for path in ({str(outside)!r}, '/proc/{os.getpid()}/environ'):\n"
        "    try:\n"
        "        open(path).read(); print('READ', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
        f"try:\n    open({str(tmp_path / 'dropped.txt')!r}, 'w')\n"
        "except OSError as exc:\n    print('refused', type(exc).__name__)\n")
    assert "mean 2" in out and "own dir ok" in out
    assert "READ" not in out, out
    assert out.count("refused PermissionError") == 3, out
    assert not (tmp_path / "dropped.txt").exists()


async def test_wall_time_ends_a_stuck_program(code_env, monkeypatch):
    monkeypatch.setenv("THREADTEAM_CODE_TIMEOUT", "1")
    out = await run("import time\nprint('started', flush=True)\ntime.sleep(60)")
    assert out.startswith("stopped: the wall-time limit of 1s was reached")
    assert "started" in out


async def test_output_is_capped(code_env):
    out = await run("print('x' * 100_000)")
    stdout = out.split("--- stdout ---\n")[1].split("\n--- stderr")[0]
    assert len(stdout) < OUTPUT_CAP + 100
    assert "cut: 92,001 more characters" in stdout


@pytest.mark.parametrize(("name", "value", "says"), [
    ("THREADTEAM_CODE_EXECUTOR", "vm", "THREADTEAM_CODE_EXECUTOR is 'vm'; use local or docker"),
    ("THREADTEAM_CODE_KEEP", "a week", "THREADTEAM_CODE_KEEP must be a positive duration"),
])
async def test_a_bad_setting_is_one_line_naming_it(code_env, monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(Exception, match=says):
        await run("print(1)")


async def test_working_directories_unused_for_a_week_are_removed_at_most_hourly(code_env,
                                                                              monkeypatch):
    from threadteam.teams import code

    monkeypatch.setattr(code, "_swept_at", 0.0)  # as in a process that has not looked yet
    week = 7 * 86400

    def workdir(name: str, idle: float) -> None:
        path = code_env / name
        path.mkdir(parents=True)
        (path / "notes.txt").write_text("kept?")
        (path / ".threadteam_snippet.py").write_text("print(1)")
        then = time.time() - idle
        for p in (path / ".threadteam_snippet.py", path):
            os.utime(p, (then, then))

    workdir("slack.old", week + 3600)
    workdir("slack.recent", week - 3600)
    (code_env / "photos").mkdir()  # not ours (no snippet), however old: never touched
    os.utime(code_env / "photos", (time.time() - 9 * week, time.time() - 9 * week))
    workdir("slack.run1", week + 3600)  # stale, but its run is calling again now
    out = await run("print(open('notes.txt').read())")
    assert "kept?" in out
    assert sorted(p.name for p in code_env.iterdir()) == ["photos", "slack.recent", "slack.run1"]
    workdir("slack.later", week + 3600)
    await run("print(1)")
    assert (code_env / "slack.later").exists(), "no second look within the hour"


@pytest.fixture
def stand_in_docker(tmp_path, monkeypatch):
    """A `docker` on PATH that records its arguments and answers as the container would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "docker-args.json"
    script = bin_dir / "docker"
    script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                      "print('hello from the container')\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("THREADTEAM_CODE_EXECUTOR", "docker")
    monkeypatch.setenv("THREADTEAM_CODE_IMAGE", "example/python:3.12")
    monkeypatch.setenv("THREADTEAM_CODE_MEMORY_MB", "300")
    monkeypatch.setenv("THREADTEAM_CODE_CPUS", "0.5")
    return record


async def test_the_docker_executor_runs_a_throwaway_offline_container(code_env, stand_in_docker):
    out = await run("print('hi')")
    assert out.startswith("exit code: 0") and "hello from the container" in out
    args = json.loads(stand_in_docker.read_text().splitlines()[0])
    assert args[:2] == ["run", "--rm"]
    flags = dict(itertools.pairwise(args))
    assert flags["--network"] == "none"
    assert flags["--memory"] == "300m" and flags["--cpus"] == "0.5"
    assert flags["--volume"] == f"{code_env / 'slack.run1'}:/work"
    assert flags["--workdir"] == "/work"
    assert "example/python:3.12" in args
    assert args[-2:] == ["python", "/work/.threadteam_snippet.py"]
    assert (code_env / "slack.run1" / ".threadteam_snippet.py").read_text() == "print('hi')"


def _requests(log: list[Event]) -> list[ToolCallRequested]:
    return [e for e in log if isinstance(e, ToolCallRequested)]


async def test_under_local_run_code_needs_approval_whatever_the_team_file_says(code_env,
                                                                               monkeypatch):
    entry = {"use": "run_code", "approval": "never"}
    team = make_team({"name": "coder", "system_message": "Run it.", "tools": [entry]})
    assert team.by_name["coder"].tools[0].approval == "always"
    monkeypatch.setenv("THREADTEAM_CODE_EXECUTOR", "docker")
    team = make_team({"name": "coder", "system_message": "Run it.", "tools": [entry]})
    assert team.by_name["coder"].tools[0].approval == "never", \
        "under docker the team file may waive it"


async def test_the_analyst_team_reaches_its_approval_on_rehearsal(code_env):
    team = TeamCatalog.load().get("analyst")
    assert team is not None
    state = RunState(team)
    log: list[Event] = [TaskStarted(team="analyst", task="Average of 3, 4 and 5?", by="U1")]
    state.apply(log[0])

    async def append(events: list[Event]) -> None:
        log.extend(events)
    action = await drive(state, Env(models=ModelPool(env={})), append)
    assert isinstance(action, AwaitApproval)
    (call,) = action.calls
    assert call.request.tool == "run_code" and call.request.agent == "coder"
    assert "code" in call.request.args
    assert not (code_env / "no-run").exists(), "nothing ran before the approval"


def test_a_wrong_code_setting_stops_a_command_that_runs_teams_at_start():
    from threadteam.bot.config import Settings
    from threadteam.bot.errors import ConfigError
    with pytest.raises(ConfigError, match=r"^THREADTEAM_CODE_EXECUTOR is 'vm'; use local or "
                                          r"docker$"):
        Settings.from_env(env={"THREADTEAM_CODE_EXECUTOR": "vm"}, uses={"code"})
    Settings.from_env(env={"THREADTEAM_CODE_EXECUTOR": "vm"}, uses={"teams_dir"})  # not used
