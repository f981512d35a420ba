"""The shape of the package: imports point one way, `adapters -> bot -> teams`, and
always through the installed names (`threadteam.bot`, never a bare `bot`).

Imports are read from the source (every `import`, `from … import`, and every string
handed to `importlib.import_module` / `__import__`), so an upward import hidden in a
string or under `TYPE_CHECKING` fails here as surely as a plain one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"teams": 0, "bot": 1, "adapters": 2}  # a layer may import only layers below it
CODE = tuple(LAYERS)
BARE = ("bot", "teams", "adapters")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "threadteam." + ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for everything `source` imports."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from threadteam import bot`
                yield node.lineno, f"{target}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant) \
                    and isinstance(first.value, str):
                yield node.lineno, first.value


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "threadteam" and parts[1] in LAYERS:
        return parts[1]
    return None


def upward(source: str, module: str, is_package: bool = False) -> list[str]:
    """Each import of `source` that points up a layer, as 'line: target'."""
    own = layer_of(module)
    assert own is not None, module
    return first_per_line((line, target) for line, target in imports(source, module, is_package)
                          if (to := layer_of(target)) is not None and LAYERS[to] > LAYERS[own])


def bare(source: str, module: str, is_package: bool = False) -> list[str]:
    """Each import of a bare `bot` / `teams` / `adapters` module."""
    return first_per_line((line, target) for line, target in imports(source, module, is_package)
                          if target.split(".")[0] in BARE)


def first_per_line(found: Iterator[tuple[int, str]]) -> list[str]:
    seen: dict[int, str] = {}
    for line, target in found:
        seen.setdefault(line, target)
    return [f"{line}: {target}" for line, target in sorted(seen.items())]


def sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_imports_point_down_the_layers() -> None:
    problems = {str(p.relative_to(ROOT)): found for p in sources(*CODE)
                if (found := upward(p.read_text(), module_name(p), p.name == "__init__.py"))}
    assert problems == {}, "imports must point adapters -> bot -> teams"


def test_the_layer_check_sees_hidden_upward_imports() -> None:
    source = (
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from threadteam.bot.host import Host\n"
        "from .. import adapters\n"
        "cli = importlib.import_module('threadteam.adapters.cli')\n"
        "from threadteam.teams.spec import Team\n"
    )
    assert upward(source, "threadteam.teams.engine") == [
        "4: threadteam.bot.host", "5: threadteam.adapters",
        "6: threadteam.adapters.cli"]
    assert upward(source, "threadteam.adapters.slack.adapter") == []


@pytest.mark.parametrize("folder", ["bot", "teams", "adapters", "tests", "benchmarks"])
def test_no_bare_package_imports(folder: str) -> None:
    problems = {}
    for path in sources(folder):
        module = module_name(path) if folder in CODE else f"{folder}.x"
        if found := bare(path.read_text(), module, path.name == "__init__.py"):
            problems[str(path.relative_to(ROOT))] = found
    assert problems == {}, "import the installed names: threadteam.bot, threadteam.teams, ..."


def test_the_bare_import_check_sees_them() -> None:
    source = "import bot.host\nfrom teams.spec import Team\nimport importlib\n" \
             "importlib.import_module('adapters.cli')\nfrom threadteam.bot import host\n"
    assert bare(source, "tests.x") == ["1: bot.host", "2: teams.spec", "4: adapters.cli"]


def test_both_chat_adapters_share_one_vocabulary() -> None:
    shared = {"__init__.py", "adapter.py", "api.py", "cli.py", "directory.py", "inbound.py",
              "posted.py", "poster.py", "text.py"}
    for platform in ("slack", "discord"):
        files = {p.name for p in (ROOT / "adapters" / platform).glob("*.py")}
        assert shared <= files, f"adapters/{platform} lacks {sorted(shared - files)}"
