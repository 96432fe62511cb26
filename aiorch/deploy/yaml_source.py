"""YAML text to a plain mapping, strictly: line numbers on every error, no silent surprises.

PyYAML quietly keeps the last of two equal keys, and aliases let a few bytes expand into a
document that takes minutes to validate; a deployment spec needs neither, so both are errors.
"""

from __future__ import annotations

from typing import Any

import yaml

from aiorch.errors import InvalidInput

MAX_BYTES = 1024 * 1024


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise InvalidInput(f"line {mark.line + 1}: YAML aliases (*name) are not supported")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key; the base class reports it with its line
                break
            if seen is not None:
                raise InvalidInput(f"line {line}: duplicate key {key!r} (first on line {seen})")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def load_mapping(text: str) -> dict[str, Any]:
    """The one YAML document in `text`, which must be a mapping."""
    if len(text.encode()) > MAX_BYTES:
        raise InvalidInput(f"spec is larger than {MAX_BYTES // 1024} KiB")
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        raise InvalidInput(f"YAML error at {where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"YAML error: {exc}") from None
    if data is None:
        raise InvalidInput("spec is empty")
    if not isinstance(data, dict):
        raise InvalidInput(f"spec must be a mapping (got {type(data).__name__})")
    return data
