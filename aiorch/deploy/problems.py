"""Pydantic validation errors as one short sentence per wrong field, for people.

`spec.resources.gpus: must be >= 0 (got -1)` rather than pydantic's three-line blocks with
URLs; unknown fields suggest the closest known one; secret values are never echoed.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

_TEMPLATES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "literal_error": "must be {expected}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "string_too_short": "must have at least {min_length} character(s)",
    "string_too_long": "must have at most {max_length} character(s)",
}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_MAX_SHOWN = 40


def problems(exc: ValidationError, root: type[BaseModel], secret: Sequence[str] = ()) -> list[str]:
    """One line per error, `path: what is wrong (got value)`; values under `secret` paths
    (dotted prefixes such as `spec.secretEnv`) are never shown."""
    lines = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if part != "[key]"]
        path = render_path(loc)
        hidden = any(path == s or path.startswith((f"{s}.", f"{s}[")) for s in secret)
        lines.append(f"{path or '(document)'}: {_message(error, root, loc, hidden)}")
    return lines


def render_path(loc: Sequence[str | int]) -> str:
    """`spec.ports[0].containerPort`; map keys that are not plain words are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _message(error: ErrorDetails, root: type[BaseModel], loc: list[str | int], hidden: bool) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return f"unknown field{_suggestion(root, loc)}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        text = "must not be empty"
    elif kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
    elif kind in _TEMPLATES:
        text = _TEMPLATES[kind].format(**ctx)
    else:
        text = error["msg"][:1].lower() + error["msg"][1:]
    shown = None if hidden else _shown(error["input"], type_error=kind.endswith("_type"))
    return f"{text} (got {shown})" if shown else text


def _shown(value: Any, type_error: bool) -> str | None:
    """The offending value, short; containers only by kind, and only for type errors."""
    if isinstance(value, dict | list):
        return ("a mapping" if isinstance(value, dict) else "a list") if type_error else None
    if value is None:
        return "nothing" if type_error else None
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _suggestion(root: type[BaseModel], loc: list[str | int]) -> str:
    model = _model_at(root, loc[:-1])
    if model is None or not isinstance(loc[-1], str):
        return ""
    known = [field.alias or name for name, field in model.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validates the mapping found at `loc`, if the path leads to one."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {field.alias or name: field for name, field in tp.model_fields.items()}
            if part not in fields:
                return None
            tp = fields[part].annotation
        else:  # a list item or a mapping value
            args = get_args(tp)
            if not args:
                return None
            tp = args[-1]
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            options = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(options) != 1:
                return tp
            tp = options[0]
        else:
            return tp
