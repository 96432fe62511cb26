"""What the hub and its agents say to each other, defined once and imported by both: the
desired-state document (`workload`), host facts (`facts`), the telemetry names the hub
reads (`telemetry`) and the hub's signed audit checkpoints (`audit`). Standard library only,
so the agent keeps its small dependency set, except `audit`, which needs cryptography for
Ed25519."""
