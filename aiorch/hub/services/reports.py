"""Agents' stored workload reports, read defensively.

Reports are checked at the door (`schemas.AgentReport`), but rows stored before that, or by
a hub of another version, may not parse: such a report counts as saying nothing, so one
host's bad row never breaks `deployments show`, `/status` or `/metrics` for the others.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from aiorch.hub.schemas import AgentReport

log = logging.getLogger("aiorch.hub.reports")


def reported_workloads(text: str | None, agent_id: str | None) -> dict[str, dict[str, Any]]:
    """Workload id -> what the agent said about it (state, reason, template_hash, ...)."""
    if not text:
        return {}
    try:
        report = AgentReport.model_validate_json(text)
    except ValidationError as exc:
        log.warning("stored report of agent %s ignored: %s", agent_id, exc.errors()[0]["msg"])
        return {}
    return {wid: about.model_dump() for wid, about in report.workloads.items()}
