"""The agent's and the hub's wheels are locked for amd64 and arm64: downloads fetch exactly the
pinned files, checked by sha256, and a lock that no longer matches pyproject.toml is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aiorch.bundle.keys import SigningKey
from aiorch.errors import UserError
from aiorch.repo import build_repo, hostpython, lock, wheels

ROOT = Path(__file__).resolve().parents[1]
PURE = "typing_extensions-4.16.0-py3-none-any.whl"
AMD64 = "pyyaml-6.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
ARM64 = "pyyaml-6.0.4-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl"
ARCH_TAGS = {"amd64": "x86_64", "arm64": "aarch64"}


def project(root: Path, *dependencies: str, hub: tuple[str, ...] = ()) -> Path:
    deps = ", ".join(f'"{d}"' for d in dependencies)
    extra = ", ".join(f'"{d}"' for d in hub)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "demo"\ndependencies = [{deps}]\n'
        f"[project.optional-dependencies]\nhub = [{extra}]\n"
    )
    return root


def locked(
    root: Path, closure: lock.Closure, requirements: list[str], per_arch: dict[str, list[str]]
) -> Path:
    """A lock for `requirements` over fake wheel files (their bytes are their names)."""
    downloaded: dict[str, list[Path]] = {}
    for arch, names in per_arch.items():
        (root / "downloaded" / arch).mkdir(parents=True, exist_ok=True)
        downloaded[arch] = []
        for name in names:
            (root / "downloaded" / arch / name).write_bytes(name.encode())
            downloaded[arch].append(root / "downloaded" / arch / name)
    path = lock.lock_path(root, closure)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lock.render(closure, requirements, downloaded))
    return path


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def test_lock_pins_each_wheel_with_the_sha256_of_every_arch(tmp_path: Path) -> None:
    root = project(tmp_path, "pyyaml>=6")
    both = {"amd64": [AMD64, PURE], "arm64": [ARM64, PURE]}
    path = locked(root, lock.AGENT, ["pyyaml>=6"], both)
    agent = lock.read_lock(root)
    assert agent.pins == ("pyyaml==6.0.4", "typing-extensions==4.16.0")
    assert agent.files(["arm64"]) == {ARM64, PURE} and agent.files(["amd64"]) == {AMD64, PURE}
    text = path.read_text()
    first, second = sorted([sha(AMD64), sha(ARM64)])
    assert f"pyyaml==6.0.4 \\\n    --hash=sha256:{first} \\\n    --hash=sha256:{second}\n" in text
    # A pure wheel is one file for both arches: one hash.
    assert f"typing-extensions==4.16.0 \\\n    --hash=sha256:{sha(PURE)}\n" in text


def test_a_lock_missing_an_arch_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path, "pyyaml>=6")
    locked(root, lock.AGENT, ["pyyaml>=6"], {"amd64": [AMD64]})
    with pytest.raises(UserError, match=r"pyyaml==6.0.4 has no wheel for arm64: run `make lock`"):
        lock.read_lock(root)


def test_build_refuses_a_lock_resolved_from_other_requirements(
    tmp_path: Path, bundle_key: SigningKey
) -> None:
    (tmp_path / "project").mkdir()
    root = project(tmp_path / "project", "httpx>=0.28")
    locked(root, lock.AGENT, ["httpx>=0.27"], {a: [PURE] for a in hostpython.ARCHES})
    with pytest.raises(UserError, match=r"resolved from \['httpx>=0.27'\].*run `make lock`"):
        build_repo(tmp_path / "repo", ["jq"], root, signing_key=bundle_key)
    assert not (tmp_path / "repo").exists(), "refused before anything was fetched"


def test_the_hub_lock_is_refused_when_the_hub_extra_changed(tmp_path: Path) -> None:
    root = project(tmp_path, "pyyaml>=6", hub=("httpx>=0.28",))
    old = ["pyyaml>=6", "httpx>=0.27"]
    locked(root, lock.HUB, old, {a: [PURE] for a in hostpython.ARCHES})
    with pytest.raises(UserError, match=r"hub.txt was resolved from .*'httpx>=0.27'.*asks for"):
        lock.read_lock(root, lock.HUB)
    with pytest.raises(UserError, match=r"hub.txt was resolved from"):
        wheels.download_hub(tmp_path / "wheels", project=root)
    assert not (tmp_path / "wheels").exists(), "refused before anything was fetched"


def test_build_refuses_a_missing_lock(tmp_path: Path, bundle_key: SigningKey) -> None:
    root = project(tmp_path, "httpx>=0.27")
    with pytest.raises(UserError, match=r"constraints/agent.txt.*run `make lock`"):
        build_repo(tmp_path / "repo", ["jq"], root, signing_key=bundle_key)


def test_an_unknown_arch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown architecture\(s\) \['riscv64'\]"):
        wheels.download_agent(tmp_path / "wheels", ["amd64", "riscv64"], project=ROOT)


def test_dependency_wheels_come_only_from_the_lock_with_hashes_per_arch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands a download runs (pip itself is not run here: test_wheel_install runs it),
    and that only the lock's files stay in the directory."""
    root = project(tmp_path, "pyyaml>=6")
    path = locked(root, lock.AGENT, ["pyyaml>=6"], {"amd64": [AMD64], "arm64": [ARM64]})
    dest = tmp_path / "wheels"
    dest.mkdir()
    (dest / "stale-1.0-py3-none-any.whl").write_bytes(b"from an older lock")
    (dest / "demo-0.1.0-py3-none-any.whl").write_bytes(b"the project's own wheel")
    ran: list[tuple[str, ...]] = []

    def pip(*args: str) -> None:  # what pip would leave: the locked files
        ran.append(args)
        for name in (AMD64, ARM64):
            (dest / name).write_bytes(name.encode())

    monkeypatch.setattr(hostpython, "run_pip", pip)
    assert wheels.download_agent(dest, project=root) == sorted([dest / AMD64, dest / ARM64])
    assert len(ran) == 2
    for argv, arch in zip(ran, hostpython.ARCHES, strict=True):
        assert argv[0] == "download" and {"--require-hashes", "--no-deps"} <= set(argv)
        assert argv[-2:] == ("--requirement", str(path)), "no loose requirement next to it"
        assert argv[argv.index("--python-version") + 1] == hostpython.PYTHON_VERSION
        platforms = [argv[i + 1] for i, a in enumerate(argv) if a == "--platform"]
        assert platforms == list(hostpython.PLATFORMS[arch])
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [AMD64, ARM64, "demo-0.1.0-py3-none-any.whl"]
    )


@pytest.mark.parametrize("closure", lock.CLOSURES, ids=lambda c: c.name)
def test_the_committed_locks_match_pyproject_with_a_wheel_per_arch(closure: lock.Closure) -> None:
    """Changing pyproject.toml's requirements without `make lock` fails here, not on a site;
    every pin has a hashed wheel for amd64 and for arm64 whose tag fits that arch."""
    locked_ = lock.read_lock(ROOT, closure)
    names = {pin.split("==")[0] for pin in locked_.pins}
    assert {"pyyaml", "nvidia-ml-py", "psutil", "cryptography"} <= names
    if closure is lock.HUB:
        assert {"fastapi", "uvicorn", "ansible-core", "pydantic-core", "uvloop"} <= names
    text = locked_.path.read_text()
    for pin in locked_.pins:
        for arch in hostpython.ARCHES:
            (wheel,) = [w for w in locked_.wheels if w.pin == pin and w.arch == arch]
            assert wheel.file.endswith("-any.whl") or ARCH_TAGS[arch] in wheel.file
            assert f"--hash=sha256:{wheel.sha256}" in text
