"""What `pip install .` puts on a machine: one import package, `threadteam`, whose
command keeps working next to a user's own `bot/`, `teams/` or `adapters/` packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--disable-pip-version-check", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    [built] = out.glob("threadteam-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_installs_one_top_level_package(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"threadteam"}
    assert "threadteam/teams/builtin/debate.yaml" in wheel.namelist()
    assert "threadteam/adapters/cli.py" in wheel.namelist()
    entry = wheel.read(next(n for n in wheel.namelist() if n.endswith("entry_points.txt")))
    assert b"threadteam = threadteam.adapters.cli:main" in entry


@pytest.fixture
def squatter(tmp_path: Path) -> Path:
    """A project with its own bot/, teams/ and adapters/ packages that break on import."""
    for name in ("bot", "teams", "adapters"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('this is the user\\'s own {name} package')\n")
    return tmp_path


def command(squatter: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    exe = shutil.which("threadteam", path=str(Path(sys.executable).parent))
    assert exe, "the threadteam command is installed next to the interpreter"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "THREADTEAM_", "OTEL_"))}
    env["PYTHONPATH"] = str(squatter)
    return subprocess.run([exe, *args], cwd=squatter, env=env, input=stdin, text=True,
                          capture_output=True, timeout=60)


def test_the_command_ignores_a_users_own_bot_package(squatter: Path) -> None:
    listed = command(squatter, "teams", "list")
    assert listed.returncode == 0, listed.stderr
    assert "debate" in listed.stdout

    chat = command(squatter, "chat", "--store", f"sqlite:///{squatter}/s.db",
                   "Should we migrate billing to Postgres?")
    assert chat.returncode == 0, chat.stderr
    assert "Synthesis:" in chat.stdout
