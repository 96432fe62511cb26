"""Telemetry names the hub computes with (the agent sends many more, stored as they come)."""

GPU_UTILIZATION = "gpu_utilization_percent"  # per GPU, 0-100: GPU-hours are made of it
SIMULATED_LABEL = "simulated"  # "true" on every sample from a simulated GPU backend
