"""The scripted model fails loudly, with types: an unexpected call, and steps left unused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from threadteam.teams.models.scripted import (
    ScriptedModel,
    UnconsumedModelSteps,
    UnexpectedModelCall,
    watch,
)

from .helpers import ask

ROOT = Path(__file__).resolve().parents[3]


def forgive(*models: ScriptedModel) -> None:
    """These failures were the point of the test: the teardown check need not report them."""
    for model in models:
        model.steps.clear()
        model.unexpected.clear()


async def test_a_call_with_no_step_left_is_an_unexpected_model_call():
    model = ScriptedModel(["one"], name="scripted")
    assert (await model.complete(ask())).text == "one"
    with pytest.raises(UnexpectedModelCall, match="unexpected call #2 \\(agent='writer'"):
        await model.complete(ask())
    forgive(model)


async def test_an_unexpected_call_a_driver_swallowed_is_still_reported():
    model = ScriptedModel()
    try:
        await model.complete(ask())
    except Exception:  # a host logs and carries on
        pass
    with pytest.raises(UnexpectedModelCall):
        model.check()
    forgive(model)


def test_steps_left_unused_are_reported_with_their_count():
    model = ScriptedModel(["a", "b"], name="bull")
    with pytest.raises(UnconsumedModelSteps, match="'bull' has 2 unused steps"):
        model.check()
    lenient = ScriptedModel(["a"], leftovers_ok=True)
    lenient.check()  # said up front: no failure
    with pytest.raises(UnconsumedModelSteps):
        lenient.assert_used()
    forgive(model)


def test_watch_lists_the_models_made_inside_it_only():
    outside = ScriptedModel()
    with watch() as made:
        inside = ScriptedModel()
    assert made == [inside] and outside not in made


def test_the_fixture_fails_a_test_that_left_steps_or_had_an_unexpected_call(tmp_path):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.teams.scripted_check"]\n')
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import asyncio
        from threadteam.teams.models.base import ModelRequest
        from threadteam.teams.models.scripted import ScriptedModel

        def ask(model):
            try:
                asyncio.run(model.complete(ModelRequest(model="m", system="", messages=())))
            except Exception:
                pass  # swallowed, as a host would

        def test_left_a_step():
            ScriptedModel(["used", "never used"]).steps.popleft()

        def test_called_once_too_often():
            ask(ScriptedModel())

        def test_all_used():
            ask(ScriptedModel(["once"]))
        """))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    out = result.stdout
    assert "3 passed, 2 errors" in out, out  # the errors are the teardown checks
    assert "UnconsumedModelSteps" in out and "UnexpectedModelCall" in out
