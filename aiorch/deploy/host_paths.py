"""Which host directories a workload may mount: only under the prefixes its project's policy
lists, compared on path boundaries (`/data` allows `/data/x`, never `/database`) after
normalising (`//`, `/./`, a trailing `/`; specs and agents already refuse `..`).

The check is lexical: it cannot see symlinks on the host. A prefix should name a directory
that workloads cannot plant symlinks in, or the agent must resolve the path before mounting.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence

from aiorch.errors import Forbidden


def normalised(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/")


def within(path: str, prefix: str) -> bool:
    """Whether absolute `path` is `prefix` or below it; a relative prefix allows nothing."""
    if not prefix.startswith("/") or not path.startswith("/"):
        return False
    path, prefix = normalised(path), normalised(prefix)
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def refuse_outside(
    project: str, allowed: Sequence[str], volumes: Iterable[tuple[str, str]]
) -> None:
    """403 naming each volume (`(where, host_path)`) outside every allowed prefix."""
    outside = [
        f"{where} hostPath {path!r}"
        for where, path in volumes
        if not any(within(path, prefix) for prefix in allowed)
    ]
    if outside:
        may = f"only under {', '.join(allowed)}" if allowed else "no host paths at all"
        raise Forbidden(
            f"{'; '.join(outside)}: project {project!r} may mount {may} "
            "(its policy's allowed host paths)"
        )
