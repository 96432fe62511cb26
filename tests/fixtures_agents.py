"""Real agents on lab hosts, without a site repository: the agent's code and its installed
dependencies (cryptography among them) are copied into the host and run there under systemd
with Restart=always. They talk to the hub over HTTPS: enrollment needs only the token, whose
CA pin the agent checks the hub against, and from then on the agent uses mTLS."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from aiorch.lab import Lab
from aiorch.wait import wait_until

AGENT_LIB = "/opt/aiorch-agent/lib"
STATE_DIR = "/var/lib/aiorch-agent"
UNIT = "aiorch-agent"
ROOT = Path(__file__).resolve().parents[1]


def _requirements(name: str) -> list[str]:
    """Names of what `name` needs on this platform, without extras."""
    reqs = [Requirement(text) for text in metadata.requires(name) or []]
    return [r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def agent_bundle(dest: Path) -> Path:
    """edge_agent plus the files of every distribution it needs, as installed here."""
    lib = dest / "lib"
    shutil.copytree(
        ROOT / "edge_agent", lib / "edge_agent", ignore=shutil.ignore_patterns("__pycache__")
    )
    todo, seen = _requirements("aiorch"), set()
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(name)
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue
            target = lib / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(str(dist.locate_file(file)), target)
        todo.extend(_requirements(name))
    return lib


@pytest.fixture(scope="session")
def agent_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return agent_bundle(tmp_path_factory.mktemp("agent-bundle"))


class LabAgent:
    """One agent on one lab host, talking to the hub at `hub_url` (https://, the lab gateway)."""

    def __init__(self, lab: Lab, host: str, hub_url: str, lib: Path, **config: object) -> None:
        assert hub_url.startswith("https://"), f"the hub serves HTTPS only, not {hub_url}"
        self.lab, self.host, self.hub_url = lab, host, hub_url
        self.lib = lib
        self.config = {"hub_url": hub_url, "state_dir": STATE_DIR, **config}

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lab.exec(self.host, ["sh", "-c", script], check=check)

    def python(self, code: str) -> str:
        return self.lab.exec(self.host, ["python3", "-c", code]).stdout

    def install(self) -> None:
        container = self.lab.host(self.host).container
        self.sh(f"rm -rf {AGENT_LIB} && mkdir -p {AGENT_LIB} /etc/aiorch")
        subprocess.run(
            ["podman", "cp", f"{self.lib}/.", f"{container}:{AGENT_LIB}"], check=True, timeout=120
        )
        text = yaml.safe_dump(self.config)
        self.lab.exec(self.host, ["sh", "-c", "cat > /etc/aiorch/agent.yaml"], input=text.encode())

    def _agent(self, *args: str) -> list[str]:
        return ["env", f"PYTHONPATH={AGENT_LIB}", "python3", "-m", "edge_agent", *args]

    def enroll(self, token: str) -> dict:
        """`token` is the whole string `aiorch enroll-token create` prints (with the CA pin)."""
        out = self.lab.exec(
            self.host, self._agent("enroll", "--hub", self.hub_url), input=token.encode()
        )
        return dict(json.loads(out.stdout))

    def start(self) -> None:
        """Run under systemd with Restart=always, as the edge_agent role installs it."""
        self.lab.exec(
            self.host,
            ["systemd-run", f"--unit={UNIT}", "-p", "Restart=always", "-p", "RestartSec=0.5",
             *self._agent("run")],
        )  # fmt: skip
        wait_until(self.running, timeout=30, what=f"the agent on {self.host} to run")

    def running(self) -> bool:
        result = self.lab.exec(self.host, ["systemctl", "is-active", UNIT], check=False)
        return result.stdout.strip() == "active"

    def stop(self) -> None:
        self.lab.exec(self.host, ["systemctl", "stop", UNIT], check=False)
        self.lab.exec(self.host, ["systemctl", "reset-failed", UNIT], check=False)

    def kill9(self) -> None:
        """kill -9 the agent; systemd starts it again from its state dir."""
        self.lab.exec(self.host, ["systemctl", "kill", "--signal=SIGKILL", UNIT])
