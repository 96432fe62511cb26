"""Container image references, parsed and normalised the way Docker and Podman read them.

One set of rules for the hub and its agents. The spec validates references with this, and the
image policy compares them against the hub's image store: `vllm/vllm-openai:v0.6.3` and
`docker.io/vllm/vllm-openai:v0.6.3` are one image. An agent checks with `holds` that an
archive is the image its desired state names before loading it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
MAX_NAME = 255

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed reference: `domain/path[:tag][@digest]`, with Docker's defaults filled in."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def pinned(self) -> bool:
        """True when the reference names content (a digest), not a movable tag."""
        return self.digest is not None

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.name}{tag}{digest}"


def parse_image(reference: str) -> ImageRef:
    """Parse `reference`; a ValueError says what is wrong with it, without repeating it."""
    if not reference or reference != reference.strip():
        raise ValueError("must be a non-empty image reference without spaces")
    rest, _, digest = reference.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError("digest must be sha256:<64 lowercase hex digits>")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    tag = None
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r} is not valid (letters, digits, '_', '.', '-'; <= 128)")
    domain, path = _split_domain(rest)
    if len(domain) + 1 + len(path) > MAX_NAME:
        raise ValueError(f"image name is longer than {MAX_NAME} characters")
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise ValueError(
                f"repository path component {component!r} is not valid "
                "(lowercase letters and digits, separated by '.', '_', '__' or '-')"
            )
    if tag is None and not digest:
        tag = DEFAULT_TAG
    return ImageRef(domain=domain, path=path, tag=tag, digest=digest or None)


def holds(reference: str, tags: Iterable[str]) -> bool:
    """Whether an archive tagged `tags` is the image `reference` names. A reference may pin
    the archive's digest (checked already): the name and any tag must still match, and a name
    pinned without a tag matches every tag of that name. Podman names what it builds or loads
    without a registry `localhost/...`, and resolves a name without one against those, so
    Docker Hub names and `localhost` names are one namespace here."""
    wanted = parse_image(reference)
    for tag in tags:
        try:
            held = parse_image(tag)
        except ValueError:  # not a tag podman could have written; it names nothing
            continue
        if _local_name(held) == _local_name(wanted) and wanted.tag in (None, held.tag):
            return True
    return False


def _local_name(ref: ImageRef) -> str:
    if ref.domain in (DEFAULT_DOMAIN, "localhost"):
        return ref.path.removeprefix("library/")
    return ref.name


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a registry when it looks like a host."""
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise ValueError(f"registry {first!r} is not a valid host[:port]")
        domain, path = first, remainder
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return domain, path
