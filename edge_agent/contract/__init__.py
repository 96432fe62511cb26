"""What the hub and its agents say to each other, defined once and imported by both: the
desired-state document (`workload`), host facts (`facts`) and the telemetry names the hub
reads (`telemetry`). Standard library only, so the agent keeps its small dependency set."""
