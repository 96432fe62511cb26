"""`aiorch provision` and `aiorch runs`: playbook runs on the hub, started and watched from here.

The CLI never runs Ansible itself: it asks the hub to, then polls the run's events
(`/runs/ID/events?after=SEQ`) and shows them as they come.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn

from aiorch.cli.client import HubClient
from aiorch.cli.output import Output, console, emit
from aiorch.cli.state import OutputOpt, state
from aiorch.errors import UserError

runs_app = typer.Typer(help="Playbook runs: list, show, logs, cancel.", no_args_is_help=True)

POLL_S = 0.5
PAGE = 1000
FAILED_EXIT = 2
ACTIVE = ("queued", "running")
COUNTS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")


def parse_extravars(pairs: list[str]) -> dict[str, Any]:
    """`-e KEY=VALUE` options as a dict (values stay strings, as with ansible-playbook -e), and
    `-e @FILE`: a YAML or JSON mapping of vars, which keeps secrets such as an enrollment
    token off the command line."""
    extravars: dict[str, Any] = {}
    for pair in pairs:
        if pair.startswith("@"):
            extravars.update(_vars_file(Path(pair[1:])))
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"-e wants KEY=VALUE or @FILE, got {pair!r}")
        extravars[key.strip()] = value
    return extravars


def _vars_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"-e @{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise UserError(f"-e @{path}: must hold a mapping of var names to values")
    return data


def provision_cmd(
    ctx: typer.Context,
    playbook: str = typer.Argument(..., help="A playbook in the playbook set, e.g. site.yml."),
    playbook_set: str = typer.Option(
        None, "--set", help='The hub\'s playbook set to run from (default "aiorch").'
    ),
    limit: str = typer.Option(
        None, "--limit", "-l", help="Hosts, groups or KEY=VALUE labels, comma-separated."
    ),
    check: bool = typer.Option(False, "--check", help="Report what would change; change nothing."),
    diff: bool = typer.Option(False, "--diff", help="Show the changes made to files."),
    serial: int = typer.Option(
        None, "--serial", min=1, help="Hosts per wave; a failing wave stops the later ones."
    ),
    max_fail_ratio: float = typer.Option(
        0.0, "--max-fail-ratio", min=0, max=1, help="Share of a wave that may fail (0: none)."
    ),
    extra_vars: list[str] = typer.Option([], "--extra-vars", "-e", help="KEY=VALUE, repeatable."),
    output: Output = OutputOpt,
) -> None:
    """Run PLAYBOOK on hosts through the hub and follow it live; exit 2 if the run fails."""
    client = state(ctx).client()
    body = {
        "playbook": playbook,
        "playbook_set": playbook_set,
        "limit": limit,
        "check": check,
        "diff": diff,
        "serial": serial,
        "max_fail_ratio": max_fail_ratio,
        "extravars": parse_extravars(extra_vars),
    }
    run = client.post("/runs", body)
    report(follow(client, run, live=output is Output.table), output)


def follow(client: HubClient, run: dict[str, Any], *, live: bool) -> dict[str, Any]:
    """Poll until the run ends and return its final state; `live` shows a line per host."""
    if live:
        where = f"{run['playbook']} (set {run['playbook_set']})"
        console.print(f"run [bold]{run['id']}[/]: {where} on {len(run['hosts'])} host(s)")
    view = _LiveView(run["hosts"]) if live else None
    after = 0
    try:
        while True:
            # Status first, then events: once a run has ended all its events are stored.
            run = client.get(f"/runs/{run['id']}")
            if view is not None:
                view.preflight(run["preflight"])
            while True:
                events = client.get(f"/runs/{run['id']}/events", after=after, limit=PAGE)
                if events:
                    after = events[-1]["seq"]
                if view is not None:
                    for event in events:
                        view.event(event)
                if len(events) < PAGE:
                    break
            if run["status"] not in ACTIVE:
                return run
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        console.print(f"\nstopped watching; the run goes on: aiorch runs show {run['id']}")
        raise
    finally:
        if view is not None:
            view.close()


class _LiveView:
    """A spinner line per host with its counts and latest task; failures printed above."""

    def __init__(self, hosts: list[str]) -> None:
        self.progress = Progress(
            SpinnerColumn(finished_text="•"),
            TextColumn("{task.fields[host]:<16}"),
            TextColumn("{task.fields[counts]:<30}"),
            TextColumn("{task.description}"),
            console=console,
        )
        self.counts: dict[str, dict[str, int]] = {h: dict.fromkeys(COUNTS, 0) for h in hosts}
        self.tasks: dict[str, TaskID] = {
            host: self.progress.add_task("waiting", total=None, host=host, counts="")
            for host in hosts
        }
        self.reported: set[str] = set()
        self.progress.start()

    def preflight(self, problems: dict[str, str]) -> None:
        for host, line in problems.items():
            if host not in self.reported:
                self.reported.add(host)
                self.progress.console.print(f"[yellow]pre-flight[/] {escape(line)}")
                self._update(host, "skipped: pre-flight failed", done=True)

    def event(self, event: dict[str, Any]) -> None:
        host, status = event["host"], event["status"]
        if host not in self.counts:
            return
        counts = self.counts[host]
        counts["ok" if status == "changed" else status] += 1
        counts["changed"] += status == "changed"
        if status in ("failed", "unreachable"):
            reason = str(event["res"].get("msg", "")).splitlines()[:1]
            line = f"{host}: {event['task']}" + (f": {reason[0]}" if reason else "")
            self.progress.console.print(f"[red]{status}[/] {escape(line)}")
        self._update(host, escape(f"{status}: {event['task']}"))

    def _update(self, host: str, description: str, done: bool = False) -> None:
        counts = " ".join(f"{k}={v}" for k, v in self.counts[host].items() if v)
        if done:
            self.progress.update(self.tasks[host], total=1, completed=1)
        self.progress.update(self.tasks[host], description=description, counts=counts)

    def close(self) -> None:
        for task in self.tasks.values():
            self.progress.update(task, total=1, completed=1)
        self.progress.stop()


def report(run: dict[str, Any], output: Output) -> None:
    """The final recap (a table, or the whole run as JSON); exit 2 unless it succeeded."""
    if output is Output.json:
        emit(run, output)
    else:
        emit(_recap_rows(run), output, ["host", *COUNTS], title=f"run {run['id']} recap")
        colour = "green" if run["status"] == "successful" else "red"
        message = f": {escape(run['message'])}" if run["message"] else ""
        console.print(f"[{colour}]{run['status']}[/]{message}")
    if run["status"] != "successful":
        raise typer.Exit(FAILED_EXIT)


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    status: str = typer.Option(None, help="Only runs with this status, e.g. failed."),
    limit: int = typer.Option(50, min=1, max=1000),
    output: Output = OutputOpt,
) -> None:
    """List the newest runs with playbook, limit, status and who started them."""
    rows = state(ctx).client().get("/runs", status=status, limit=limit)
    columns = ["id", "kind", "playbook_set", "playbook", "limit", "check", "status", "actor"]
    emit(rows, output, [*columns, "created_at", "finished_at"])


@runs_app.command("show")
def runs_show(ctx: typer.Context, run_id: str, output: Output = OutputOpt) -> None:
    """Show one run: what ran where, its outcome and the recap per host."""
    run = state(ctx).client().get(f"/runs/{run_id}")
    if output is Output.json:
        emit(run, output)
        return
    summary = {k: v for k, v in run.items() if k not in ("recap", "preflight", "hosts")}
    emit({**summary, "hosts": run["hosts"]}, output)
    rows = _recap_rows(run)
    if rows:
        emit(rows, output, ["host", *COUNTS], title="recap")


def _recap_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Ansible's recap per host, and a row for each host pre-flight kept out of the run."""
    rows = [{"host": host, **counts} for host, counts in sorted(run["recap"].items())]
    problems = sorted(run["preflight"].items())
    return rows + [{"host": host, "failed": f"pre-flight: {line}"} for host, line in problems]


@runs_app.command("logs")
def runs_logs(
    ctx: typer.Context,
    run_id: str,
    follow_run: bool = typer.Option(False, "--follow", "-f", help="Keep printing until it ends."),
    output: Output = OutputOpt,
) -> None:
    """Print a run's task results in order (host, status, task, message)."""
    client = state(ctx).client()
    after, shown = 0, []
    while True:
        run = client.get(f"/runs/{run_id}")
        while True:
            events = client.get(f"/runs/{run_id}/events", after=after, limit=PAGE)
            for event in events:
                after = event["seq"]
                if output is Output.json:
                    shown.append(event)
                else:
                    console.print(_log_line(event), markup=False, highlight=False)
            if len(events) < PAGE:
                break
        if not follow_run or run["status"] not in ACTIVE:
            break
        time.sleep(POLL_S)
    if output is Output.json:
        emit(shown, output)


def _log_line(event: dict[str, Any]) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    message = str(event["res"].get("msg", "")).splitlines()[:1]
    duration = f"{event['duration']:.1f}s" if event["duration"] is not None else "-"
    line = f"{event['seq']:>5} {clock} {event['host']:<16} {event['status']:<11} {duration:>6}"
    return f"{line}  {event['task']}" + (f": {message[0]}" if message else "")


@runs_app.command("cancel")
def runs_cancel(ctx: typer.Context, run_id: str) -> None:
    """Cancel a running run: Ansible is stopped and the hosts' locks are released."""
    run = state(ctx).client().post(f"/runs/{run_id}/cancel", {})
    print(f"canceling run {run['id']}")
