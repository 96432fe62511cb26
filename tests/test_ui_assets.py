"""The dashboard works air-gapped: its assets are the vendored files, unchanged, and no
template or script of ours loads anything from another origin."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from aiorch.hub.ui.render import STATIC_DIR

HERE = Path(STATIC_DIR).parent
VENDOR = STATIC_DIR / "vendor"
DIGESTS = {
    "htmx-ext-sse.min.js": "98a46496de0c3605fbffdce9167ba427bdd9553184f83f149c261891a92c0136",
    "htmx.min.js": "71ea67185bfa8c98c39d31717c6fce5d852370fcdfd129db4543774d3145c0de",
    "pico.min.css": "fbc9a63fc9fc9f72d12fd7fc9806e11fa9f77ae4f9cad146b27003a1119ba3db",
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
}
EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//""", re.I)


def test_vendored_assets_are_the_files_the_readme_names() -> None:
    found = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in VENDOR.glob("*.*s")}
    assert found == DIGESTS


def test_no_template_or_script_of_ours_loads_from_another_origin() -> None:
    ours = [
        *(HERE / "templates").glob("*.html"),
        *STATIC_DIR.glob("*.js"),
        *STATIC_DIR.glob("*.css"),
    ]
    assert ours
    offenders = [str(p) for p in ours if EXTERNAL.search(p.read_text())]
    assert offenders == []
