"""A workload entry the agents' contract parser accepts, for hand-written desired states."""

from __future__ import annotations

from typing import Any

DIGEST = "sha256:" + "ab" * 32


def a_workload(**extra: Any) -> dict[str, Any]:
    return {
        "id": "nlp/chat/0",
        "project": "nlp",
        "deployment": "chat",
        "replica": 0,
        "template_hash": "t1",
        "image": {"ref": "localhost/aiorch-model:v1", "digest": DIGEST, "size": 1},
        "command": [],
        "args": [],
        "env": {"MODEL_NAME": "chat"},
        "secret_env": {},
        "ports": [{"container_port": 8080, "host_port": 18080, "protocol": "tcp"}],
        "volumes": [],
        "gpus": [],
        "cpu": 1,
        "memory_mib": 256,
        "health_check": None,
        **extra,
    }
