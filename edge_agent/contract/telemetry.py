"""Telemetry names shared by hub and agent: the ones the hub computes with, and the kind and
meaning of every series the agent sends, so that the hub's `/metrics` types each one right
(a counter as a counter) and says what it measures. Stored names never change; the hub maps
them for Prometheus (aiorch.hub.services.exposition)."""

from typing import Literal

GPU_UTILIZATION = "gpu_utilization_percent"  # per GPU, 0-100: GPU-hours are made of it
SIMULATED_LABEL = "simulated"  # "true" on every sample from a simulated GPU backend

Kind = Literal["counter", "gauge"]
COUNTER: Kind = "counter"
GAUGE: Kind = "gauge"

# metric -> (kind, help). A counter's name ends in `_total`; every name carries its unit.
METRICS: dict[str, tuple[Kind, str]] = {
    GPU_UTILIZATION: (GAUGE, "GPU utilization, percent."),
    "gpu_memory_utilization_percent": (GAUGE, "GPU memory controller utilization, percent."),
    "gpu_memory_used_bytes": (GAUGE, "GPU framebuffer memory used, bytes."),
    "gpu_memory_total_bytes": (GAUGE, "GPU framebuffer memory size, bytes."),
    "gpu_temperature_celsius": (GAUGE, "GPU temperature, degrees Celsius."),
    "gpu_power_watts": (GAUGE, "GPU power draw, watts."),
    "gpu_sm_clock_hertz": (GAUGE, "GPU SM clock, hertz."),
    "gpu_performance_state": (GAUGE, "GPU performance state (0 fastest, 15 slowest)."),
    "gpu_clocks_event_reasons": (GAUGE, "Bitmask of why the GPU clocks are held down (NVML)."),
    "gpu_ecc_errors_total": (COUNTER, "GPU ECC errors by counter (volatile, aggregate), type."),
    "gpu_remapped_rows": (GAUGE, "GPU memory rows remapped, by type."),
    "gpu_remapped_rows_pending": (GAUGE, "1 when a GPU row remap waits for a GPU reset."),
    "gpu_remapped_rows_failure": (GAUGE, "1 when a GPU row remap failed."),
    "gpu_energy_joules_total": (COUNTER, "GPU energy used since the driver loaded, joules."),
    "gpu_pcie_transmit_bytes_per_second": (GAUGE, "GPU PCIe transmit rate, bytes per second."),
    "gpu_pcie_receive_bytes_per_second": (GAUGE, "GPU PCIe receive rate, bytes per second."),
    "gpu_processes": (GAUGE, "Processes running on the GPU."),
    "gpu_xid_errors_total": (COUNTER, "GPU XID errors seen by the agent, by XID."),
    "gpu_field_unsupported": (GAUGE, "1 for a GPU field this GPU or driver cannot report."),
    "gpu_field_read_failed": (GAUGE, "1 for a GPU field whose last read failed."),
    "host_cpu_utilization_percent": (GAUGE, "Host CPU utilization, percent."),
    "host_memory_used_bytes": (GAUGE, "Host memory in use (total less available), bytes."),
    "host_memory_total_bytes": (GAUGE, "Host memory size, bytes."),
    "host_load1": (GAUGE, "Host load average over 1 minute."),
    "host_load5": (GAUGE, "Host load average over 5 minutes."),
    "host_load15": (GAUGE, "Host load average over 15 minutes."),
    "host_filesystem_used_bytes": (GAUGE, "Filesystem space used, bytes."),
    "host_filesystem_size_bytes": (GAUGE, "Filesystem size, bytes."),
    "host_disk_read_bytes_total": (COUNTER, "Bytes read from the disk."),
    "host_disk_written_bytes_total": (COUNTER, "Bytes written to the disk."),
    "net_receive_bytes_total": (COUNTER, "Bytes received on the interface."),
    "net_transmit_bytes_total": (COUNTER, "Bytes sent on the interface."),
    "net_receive_packets_total": (COUNTER, "Packets received on the interface."),
    "net_transmit_packets_total": (COUNTER, "Packets sent on the interface."),
    "net_receive_errors_total": (COUNTER, "Receive errors on the interface."),
    "net_transmit_errors_total": (COUNTER, "Transmit errors on the interface."),
    "net_receive_drops_total": (COUNTER, "Received packets dropped on the interface."),
    "net_transmit_drops_total": (COUNTER, "Outgoing packets dropped on the interface."),
    "net_up": (GAUGE, "1 when the interface's link is up."),
    "net_mtu_bytes": (GAUGE, "Interface MTU, bytes."),
    "net_bond_member_active": (GAUGE, "1 when the bond member is the active one."),
    "net_bond_member_link_up": (GAUGE, "1 when the bond member's link is up."),
    "workload_running": (GAUGE, "1 when the workload's container is running."),
    "workload_restarts_total": (COUNTER, "Restarts of the workload's container."),
    "workload_healthy": (GAUGE, "1 when the workload's health check passes."),
    "agent_collector_duration_seconds": (GAUGE, "Time the collector took last round, seconds."),
    "agent_collector_errors_total": (COUNTER, "Failures of the collector since agent start."),
    "agent_resident_memory_bytes": (GAUGE, "The agent's resident memory, bytes."),
    "agent_cpu_seconds_total": (COUNTER, "CPU time the agent used, seconds."),
}


def kind(metric: str) -> Kind:
    """A name from an agent newer than this table is a counter exactly when it ends in `_total`."""
    known = METRICS.get(metric)
    if known is not None:
        return known[0]
    return COUNTER if metric.endswith("_total") else GAUGE
