"""Keep secrets out of everything a run stores: events, the run row, the audit log.

Two layers. Results marked `no_log` (Ansible's `_ansible_no_log`) have every value masked;
ansible-runner already censors whole results, this also covers nested ones such as loop
items. And the values of extra vars whose names look secret are masked wherever they
appear in stored text, whatever task printed them.

The same names decide which inventory vars are sealed at rest and masked in answers
(`map_secrets`, `mask_secrets`): one list of what looks secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

MASK = "********"
SECRET_NAME = re.compile(r"token|passw|secret|key|credential|private", re.IGNORECASE)
_NO_LOG_FLAGS = ("_ansible_no_log", "no_log")


def secret_name(name: object) -> bool:
    """Whether a var (or a key inside one) is named like a secret."""
    return bool(SECRET_NAME.search(str(name)))


def map_secrets(
    value: Any, change: Callable[[tuple[str, ...], Any], Any], path: tuple[str, ...] = ()
) -> Any:
    """`value` with what sits under each secret-looking key replaced by `change(path, it)`,
    at any depth; `path` is the keys (and list positions) that lead there."""
    if isinstance(value, Mapping):
        out = {}
        for key, inner in value.items():
            where = (*path, str(key))
            out[str(key)] = (
                change(where, inner) if secret_name(key) else map_secrets(inner, change, where)
            )
        return out
    if isinstance(value, list | tuple):
        return [map_secrets(inner, change, (*path, str(i))) for i, inner in enumerate(value)]
    return value


def mask_secrets(value: Any) -> Any:
    """`value` as shown to someone who may not read its secrets: names kept, values masked."""
    return map_secrets(value, lambda _path, _inner: MASK)


def secret_values(extravars: Mapping[str, Any], *, texts_only: bool = False) -> list[str]:
    """Every scalar (or, `texts_only`, every string) under a var whose name looks secret,
    longest first."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(inner, secret or secret_name(key))
        elif isinstance(value, list | tuple):
            for inner in value:
                walk(inner, secret)
        elif secret and value is not None and str(value) != "":
            found.update([str(value)] if isinstance(value, str) or not texts_only else [])

    walk(extravars, False)
    return longest_first(found)


def longest_first(secrets: Iterable[str]) -> list[str]:
    """Each secret once, longest first: so masking one never leaves part of a longer one."""
    return sorted(set(secrets), key=len, reverse=True)


def mask_extravars(extravars: Mapping[str, Any]) -> dict[str, Any]:
    """The extra vars as stored and shown: secret-looking ones keep their name, not value."""
    masked: dict[str, Any] = scrub(extravars, secret_values(extravars))
    return masked


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with no_log results masked and every secret replaced in every string."""
    secrets = tuple(secrets)
    if isinstance(value, Mapping):
        if any(value.get(flag) is True for flag in _NO_LOG_FLAGS):
            return {k: v if k in _NO_LOG_FLAGS else MASK for k, v in value.items()}
        return {str(k): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in secrets:
        return MASK
    return value


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
