"""A fixture that checks every ScriptedModel a test made: no unexpected call, no step unused.

The engine tests use it through tests/teams/conftest.py; any conftest can list this
module in `pytest_plugins` to check its tests' scripted models the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from threadteam.teams.models.scripted import ScriptedModel, watch


@pytest.fixture(autouse=True)
def scripted_models_are_used_up() -> Iterator[list[ScriptedModel]]:
    """Fails the test at teardown if one of its ScriptedModels was called with no step left
    (even where a driver swallowed the error) or kept steps no call used."""
    with watch() as made:
        yield made
    for model in made:
        model.check()
