"""`run_code`: Python an agent writes, run once a person approves it.

The executor comes from `THREADTEAM_CODE_EXECUTOR`:

- `local` (the default): a subprocess of this machine's Python with CPU, memory,
  file-size, open-file and wall-time limits (resource rlimits), an empty environment
  and the run's own working directory; where the kernel has Landlock (Linux 5.13+) it
  may read and write only that directory and read only Python's and the system's files
  (teams/_sandbox.py). It is not a container: it runs as the bot's user, with the
  network and the other processes in reach. So under `local`, `run_code` always needs
  approval, whatever a team file says.
- `docker`: `docker run --rm --network none` with memory, CPU, process and time
  limits, every capability dropped, the run's working directory mounted at /work,
  in `THREADTEAM_CODE_IMAGE` (default python:3.12-slim).

A run's working directory (under `THREADTEAM_CODE_DIR`, default a folder in the
system's temporary directory) persists between the calls of that run; one no call has
used for `THREADTEAM_CODE_KEEP` (default 7d) is removed, at most once an hour, when
code runs next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from ._duration import seconds
from .errors import ToolError
from .tools import Tool, ToolContext

__all__ = ["CodeResult", "CodeSettings", "run_code", "run_in_docker", "run_locally"]

#: The most of stdout, and of stderr, handed back (characters each).
OUTPUT_CAP = 8_000
_FILE_LIMIT = 64 * 1024 * 1024
_SNIPPET = ".threadteam_snippet.py"

#: Runs in the child before the agent's code: limits, Landlock where there is one, the code.
_SANDBOX = str(Path(__file__).with_name("_sandbox.py"))


@dataclass(frozen=True)
class CodeSettings:
    """How code runs: the executor and its limits, from the environment."""

    executor: str = "local"
    timeout: float = 30.0
    memory_mb: int = 512
    cpus: float = 1.0
    image: str = "python:3.12-slim"
    root: Path = Path(tempfile.gettempdir()) / "threadteam-code"
    keep: float = 7 * 86400.0  # seconds a working directory lasts after its last call

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> CodeSettings:
        """The settings; a bad value raises ToolError naming its variable."""
        env = dict(os.environ if environ is None else environ)
        executor = env.get("THREADTEAM_CODE_EXECUTOR", "local").strip() or "local"
        if executor not in ("local", "docker"):
            raise ToolError(f"THREADTEAM_CODE_EXECUTOR is {executor!r}; use local or docker")
        try:
            timeout = _duration(env, "THREADTEAM_CODE_TIMEOUT", "30")
            keep = _duration(env, "THREADTEAM_CODE_KEEP", "7d")
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        try:
            memory = int(env.get("THREADTEAM_CODE_MEMORY_MB", "512"))
            cpus = float(env.get("THREADTEAM_CODE_CPUS", "1"))
        except ValueError:
            raise ToolError("THREADTEAM_CODE_MEMORY_MB must be a whole number of megabytes and "
                            "THREADTEAM_CODE_CPUS a number") from None
        if timeout <= 0 or memory < 16 or cpus <= 0:
            raise ToolError("THREADTEAM_CODE_TIMEOUT and THREADTEAM_CODE_CPUS must be above 0 "
                            "and THREADTEAM_CODE_MEMORY_MB at least 16")
        root = Path(env.get("THREADTEAM_CODE_DIR") or cls.root).expanduser()
        return cls(executor, timeout, memory, cpus,
                   env.get("THREADTEAM_CODE_IMAGE", "python:3.12-slim"), root, keep)

    def workdir(self, run_id: str) -> Path:
        """The run's working directory (made owner-only on first use)."""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id or "no-run")[:120].lstrip(".") or "run"
        path = self.root / name
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def sweep(self, now: float, keeping: Path) -> None:
        """Remove the working directories no call has used for `keep` seconds (a call
        rewrites the directory's snippet), except `keeping`. Only a directory with our
        snippet in it is ours: nothing else under the root is touched, wherever
        THREADTEAM_CODE_DIR points."""
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return
        for path in entries:
            if path == keeping or path.is_symlink() or not path.is_dir():
                continue
            try:
                used = max(path.stat().st_mtime, (path / _SNIPPET).stat().st_mtime)
            except OSError:  # no snippet: not a working directory of ours
                continue
            if now - used > self.keep:
                shutil.rmtree(path, ignore_errors=True)


def _duration(env: dict[str, str], name: str, default: str) -> float:
    raw = env.get(name, default).strip()
    return seconds(float(raw) if raw.replace(".", "", 1).isdigit() else raw, name)


#: When this process last looked for stale working directories (time.time()).
_swept_at = 0.0
_SWEEP_EVERY = 3600.0


def _prepare(settings: CodeSettings, run_id: str) -> Path:
    """The run's working directory; first, at most once an hour, the stale ones go."""
    global _swept_at
    workdir = settings.workdir(run_id)
    now = time.time()
    if now - _swept_at >= _SWEEP_EVERY:
        _swept_at = now
        settings.sweep(now, keeping=workdir)
    return workdir


@dataclass(frozen=True)
class CodeResult:
    """What one run of code did."""

    exit_code: int | None
    stdout: str
    stderr: str
    killed: str = ""  # why it was stopped, if it was

    def for_model(self) -> str:
        """The whole result, as the model reads it."""
        head = (f"stopped: {self.killed}" if self.killed else f"exit code: {self.exit_code}")
        return f"{head}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}".rstrip()

    def summary(self) -> str:
        """One short line for the thread."""
        lines = len(self.stdout.splitlines())
        what = self.killed or f"exited with code {self.exit_code}"
        return f"`run_code` {what}; {lines} line{'s' if lines != 1 else ''} of output."


async def _read_capped(stream: asyncio.StreamReader | None) -> str:
    """Everything the stream says, kept up to OUTPUT_CAP characters (the rest is counted)."""
    if stream is None:
        return ""
    kept, dropped = bytearray(), 0
    while chunk := await stream.read(65536):
        room = OUTPUT_CAP * 4 - len(kept)
        kept += chunk[:max(room, 0)]
        dropped += max(len(chunk) - max(room, 0), 0)
    text = kept.decode("utf-8", errors="replace")
    if len(text) > OUTPUT_CAP or dropped:
        extra = len(text) - OUTPUT_CAP if len(text) > OUTPUT_CAP else 0
        text = text[:OUTPUT_CAP] + f"\n… (cut: {extra + dropped:,} more characters)"
    return text


async def _run(argv: list[str], cwd: Path, timeout: float, env: dict[str, str],
               on_timeout: list[str] | None = None) -> CodeResult:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    reading = asyncio.gather(_read_capped(proc.stdout), _read_capped(proc.stderr), proc.wait())
    killed = ""
    try:
        async with asyncio.timeout(timeout):
            out, err, code = await asyncio.shield(reading)
    except TimeoutError:
        killed = f"the wall-time limit of {timeout:g}s was reached"
        if on_timeout:  # the container outlives the docker client: stop it by name
            with contextlib.suppress(OSError):
                stopper = await asyncio.create_subprocess_exec(
                    *on_timeout, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL)
                await stopper.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err, code = await reading
    if not killed and code == -signal.SIGXCPU:
        killed = "the CPU-time limit was reached"
    elif not killed and code == -signal.SIGXFSZ:
        killed = "the file-size limit was reached"
    return CodeResult(code, out, err, killed)


async def run_locally(code: str, workdir: Path, settings: CodeSettings) -> CodeResult:
    """Run `code` in a limited subprocess of this machine's Python, in `workdir`."""
    snippet = workdir / _SNIPPET
    snippet.write_text(code, encoding="utf-8")
    cpu = max(1, int(settings.timeout))
    argv = [sys.executable, "-I", _SANDBOX, str(cpu),
            str(settings.memory_mb * 1024 * 1024), str(_FILE_LIMIT), str(snippet)]
    # An empty environment: nothing of the bot's (API keys, tokens) reaches the code.
    result = await _run(argv, workdir, settings.timeout, env={})
    if result.killed or result.exit_code == 0:
        return result
    # Python turns these limits into exceptions rather than dying of a signal.
    tail = result.stderr[-400:]
    if "MemoryError" in tail:
        return replace(result, killed=f"the memory limit of {settings.memory_mb} MB was reached")
    if "[Errno 27]" in tail:  # EFBIG: Python ignores SIGXFSZ, so the write fails instead
        return replace(result, killed="the file-size limit was reached")
    return result


async def run_in_docker(code: str, workdir: Path, settings: CodeSettings, name: str
                        ) -> CodeResult:
    """Run `code` in a throw-away container with no network, `workdir` mounted at /work."""
    (workdir / _SNIPPET).write_text(code, encoding="utf-8")
    argv = ["docker", "run", "--rm", "--network", "none", "--name", name,
            "--memory", f"{settings.memory_mb}m", "--memory-swap", f"{settings.memory_mb}m",
            "--cpus", f"{settings.cpus:g}", "--pids-limit", "128",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--ulimit", f"fsize={_FILE_LIMIT}:{_FILE_LIMIT}",
            "--user", f"{os.getuid()}:{os.getgid()}",
            "--volume", f"{workdir}:/work", "--workdir", "/work",
            settings.image, "timeout", "-s", "KILL", f"{settings.timeout:g}",
            "python", f"/work/{_SNIPPET}"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # to find docker; no secrets
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    try:
        return await _run(argv, workdir, settings.timeout + 10, env,
                          on_timeout=["docker", "kill", name])
    except FileNotFoundError:
        raise ToolError("THREADTEAM_CODE_EXECUTOR is docker, but there is no docker command "
                        "on PATH") from None


async def _run_code(code: str, context: ToolContext) -> str:
    """Run Python code in this run's working directory (files persist between calls)
    and return its exit code, stdout and stderr; print what you want to see, for example
    'print(sum([3, 5, 10]) / 3)'."""
    settings = CodeSettings.from_env()
    workdir = await asyncio.to_thread(_prepare, settings, context.run_id)
    if settings.executor == "docker":
        name = f"threadteam-code-{uuid.uuid4().hex[:16]}"
        result = await run_in_docker(code, workdir, settings, name)
    else:
        result = await run_locally(code, workdir, settings)
    if context.notice is not None:
        await context.notice(result.summary())
    return result.for_model()


def _under_local() -> bool:
    try:
        return CodeSettings.from_env().executor == "local"
    except ToolError:
        return True  # unsure: keep the stricter rule


#: The built-in tool. Always needs approval under `local`, whatever a team file says.
run_code = replace(Tool.from_function(_run_code, name="run_code", approval="always"),
                   pinned_when=_under_local)
