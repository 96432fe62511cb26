"""The agent's wheels are locked: `aiorch repo build` downloads exactly the pinned files, checked
by sha256, and refuses a lock that no longer matches pyproject.toml."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aiorch.bundle.keys import SigningKey
from aiorch.errors import UserError
from aiorch.repo import build_repo, lock, wheels

ROOT = Path(__file__).resolve().parents[1]


def project(root: Path, *dependencies: str) -> Path:
    deps = ", ".join(f'"{d}"' for d in dependencies)
    (root / "pyproject.toml").write_text(f'[project]\nname = "demo"\ndependencies = [{deps}]\n')
    return root


def locked(root: Path, requirements: list[str], wheel_names: list[str]) -> Path:
    """A lock for `requirements` over fake wheel files (their bytes are their names)."""
    downloaded = root / "downloaded"
    downloaded.mkdir()
    for name in wheel_names:
        (downloaded / name).write_bytes(name.encode())
    lock.lock_path(root).parent.mkdir(parents=True)
    lock.lock_path(root).write_text(lock.render(requirements, list(downloaded.iterdir())))
    return lock.lock_path(root)


def test_lock_pins_each_wheel_with_its_sha256(tmp_path: Path) -> None:
    root = project(tmp_path, "httpx>=0.27")
    wheel = "typing_extensions-4.16.0-py3-none-any.whl"
    path = locked(root, ["httpx>=0.27"], ["httpx-0.28.1-py3-none-any.whl", wheel])
    assert lock.read_lock(root).pins == ("httpx==0.28.1", "typing-extensions==4.16.0")
    digest = hashlib.sha256(wheel.encode()).hexdigest()
    assert f"typing-extensions==4.16.0 \\\n    --hash=sha256:{digest}\n" in path.read_text()


def test_build_refuses_a_lock_resolved_from_other_requirements(
    tmp_path: Path, bundle_key: SigningKey
) -> None:
    (tmp_path / "project").mkdir()
    root = project(tmp_path / "project", "httpx>=0.28")
    locked(root, ["httpx>=0.27"], ["httpx-0.28.1-py3-none-any.whl"])
    with pytest.raises(UserError, match=r"resolved from \['httpx>=0.27'\].*run `make lock`"):
        build_repo(tmp_path / "repo", ["jq"], root, signing_key=bundle_key)
    assert not (tmp_path / "repo").exists(), "refused before anything was fetched"


def test_build_refuses_a_missing_lock(tmp_path: Path, bundle_key: SigningKey) -> None:
    root = project(tmp_path, "httpx>=0.27")
    with pytest.raises(UserError, match=r"constraints/agent.txt.*run `make lock`"):
        build_repo(tmp_path / "repo", ["jq"], root, signing_key=bundle_key)


def test_dependency_wheels_come_only_from_the_lock_with_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command the build runs (pip itself is not run: that needs PyPI, see test_repo)."""
    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr(wheels, "run_pip", lambda *args: ran.append(args))
    lock_file = tmp_path / "agent.txt"
    wheels.download_dependencies(lock_file, tmp_path / "wheels", "aiorch")
    (argv,) = ran
    assert argv[0] == "download" and "--require-hashes" in argv
    assert argv[-2:] == ("--requirement", str(lock_file)), "no loose requirement next to it"
    assert argv[argv.index("--python-version") + 1] == wheels.PYTHON_VERSION


def test_the_committed_lock_matches_pyproject() -> None:
    """Changing [project].dependencies without `make lock` fails here, not on a site."""
    agent_lock = lock.read_lock(ROOT)
    names = {pin.split("==")[0] for pin in agent_lock.pins}
    assert {"pyyaml", "nvidia-ml-py", "psutil"} <= names
    assert all("--hash=sha256:" in line for line in _hash_lines(agent_lock.path))


def _hash_lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [lines[i + 1] for i, line in enumerate(lines) if "==" in line and line[0] != "#"]
