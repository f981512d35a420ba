"""YAML loading that remembers where every value stood, for errors that name a line."""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


__all__ = ["NO_ALIASES", "Path", "line_of", "load_with_lines"]

NO_ALIASES = ("anchors and aliases (&name, *name) are not allowed in team files; "
              "write each value out in full")


class _Loader(yaml.SafeLoader):
    """A safe loader that refuses anchors and aliases.

    An alias makes a document a graph: a few lines can stand for billions of values
    (an "alias bomb") or for a value that contains itself. Team files are short, so
    they are refused outright, at the first `&` or `*`, before anything is built.
    """

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:  # type: ignore[override]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, NO_ALIASES, event.start_mark)
        return super().compose_node(parent, index)  # type: ignore[arg-type]


def load_with_lines(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse YAML; return the data and a map from path (keys/indices) to 1-based line."""
    lines: dict[Path, int] = {}
    node = yaml.compose(text, Loader=_Loader)
    if node is None:
        return None, lines
    return _build(node, (), lines), lines


def _build(node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.MarkedYAMLError(
                    problem="a key must be a plain word, not a list or mapping",
                    problem_mark=key_node.start_mark)
            key = _scalar(key_node)
            if key in out:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = _Loader("")
    return loader.construct_object(node, deep=True)


def line_of(lines: dict[Path, int], loc: Path) -> int | None:
    """The line of the longest prefix of `loc` that was recorded."""
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None
