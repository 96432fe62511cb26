"""Docs under test: every CLI command has help text and appears in the README."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer

from aiorch.cli.main import app
from tests.fixtures_hub import AGENT, AIORCH

README = (Path(__file__).parent.parent / "README.md").read_text()


def _leaves(command: Any, prefix: str) -> list[tuple[str, Any]]:
    if hasattr(command, "commands"):
        return [
            leaf
            for name, sub in sorted(command.commands.items())
            for leaf in _leaves(sub, f"{prefix} {name}")
        ]
    return [(prefix, command)]


COMMANDS = _leaves(typer.main.get_command(app), "aiorch")


def test_cli_has_the_commands_the_readme_promises():
    names = {name for name, _ in COMMANDS}
    assert {"aiorch hub serve", "aiorch enroll-token create", "aiorch agents list"} <= names


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_command_has_help_and_is_in_readme(name: str, command: Any):
    assert (command.help or "").strip(), f"{name} has no help text"
    assert name in README, f"README does not mention `{name}`"


def test_agent_commands_are_in_readme():
    for sub in ("enroll", "run"):
        assert f"aiorch-agent {sub}" in README
        result = subprocess.run([AGENT, sub, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "--config" in result.stdout


def test_cli_error_is_one_line_without_traceback():
    result = subprocess.run(
        [AIORCH, "--hub", "https://127.0.0.1:9", "--token", "x", "hosts", "list"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot reach hub" in result.stderr


def test_cli_refuses_a_plain_http_hub_in_one_line():
    result = subprocess.run(
        [AIORCH, "--hub", "http://127.0.0.1:9", "--token", "x", "hosts", "list"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "HTTPS only" in result.stderr


def _readme_command_lines() -> list[str]:
    """Every `aiorch ...` line in README's shell blocks, comments and continuations off."""
    lines, in_shell = [], False
    for raw in README.splitlines():
        if raw.startswith("```"):
            in_shell = raw.strip() in ("```sh", "```bash", "```shell")
            continue
        line = raw.split(" #", 1)[0].strip().rstrip("\\").strip()
        if in_shell and line.startswith("aiorch "):
            lines.append(line)
    return lines


@pytest.mark.parametrize("line", _readme_command_lines())
def test_readme_commands_name_real_commands_and_options(line: str):
    """What README tells people to type exists: the command, and every --option it uses."""
    words = shlex.split(line.split("|", 1)[0])
    commands = dict(COMMANDS)
    name = max((n for n in commands if words[: len(n.split())] == n.split()), key=len, default="")
    assert name, f"README's `{line}` is no aiorch command"
    known = {opt for param in commands[name].params for opt in param.opts}
    known |= {"--help", "--hub", "--token", "--data-dir", "--output"}
    used = {word.split("=", 1)[0] for word in words if word.startswith("--")}
    assert used <= known, f"`{line}`: {sorted(used - known)} not options of `{name}`"
