"""The GPU acceptance gate: the checker over the simulated backend and over a scripted NVML
stand-in (each failure it must catch), DCGM and NCCL output, the CLI's exit codes, and the
aiorch_gpu_acceptance role's conventions. The real check runs on a lent GPU machine
(benchmarks/device/gpu_acceptance.sh)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pynvml
import pytest
import yaml

from edge_agent import cli
from edge_agent.gpu.acceptance import ProfileError, Thresholds, run_acceptance
from edge_agent.gpu.acceptance_probes import NvmlProbe, open_probe
from edge_agent.gpu.acceptance_tools import dcgm_check, nccl_check
from tests.test_gpu_backend import FakeNvml


def no_tool(name: str) -> None:
    return None


def tool(name: str) -> str:
    return f"/usr/bin/{name}"


class AcceptanceNvml(FakeNvml):
    """FakeNvml with the readings acceptance adds: a healthy Hopper GPU at Gen5 x16."""

    def __init__(self, gpus: int = 1, **kwargs: Any) -> None:
        super().__init__(gpus, **kwargs)
        self.results.update(
            nvmlDeviceGetHandleByUUID=lambda uuid: int(uuid.rsplit("-", 1)[1]),
            nvmlDeviceGetSerial=lambda handle: f"165422{handle:07d}",
            nvmlDeviceGetEccMode=[1, 1],
            nvmlDeviceGetCurrPcieLinkWidth=16,
            nvmlDeviceGetMaxPcieLinkWidth=16,
            nvmlDeviceGetCurrPcieLinkGeneration=5,
            nvmlDeviceGetMaxPcieLinkGeneration=5,
            nvmlDeviceGetGpuMaxPcieLinkGeneration=5,
            nvmlDeviceGetRetiredPagesPendingStatus=0,
            nvmlDeviceGetRetiredPages=[],
        )


def check_nvml(fake: AcceptanceNvml, **thresholds: Any) -> dict[str, Any]:
    probe = NvmlProbe(fake)
    with probe.backend:
        return run_acceptance(probe, Thresholds(**thresholds), which=no_tool)


def rows(record: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [c for c in record["checks"] if c["name"] == name]


def failed(record: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(c["name"], c["gpu"]) for c in record["checks"] if not c["ok"]}


def test_the_stand_in_scripts_only_functions_that_pynvml_has() -> None:
    assert [name for name in AcceptanceNvml().results if not hasattr(pynvml, name)] == []


def test_a_simulated_fleet_is_accepted_and_labelled_simulated() -> None:
    probe = open_probe("simulated:8xH100-80GB")
    record = run_acceptance(probe, Thresholds(expect_count=8, model="H100"), which=no_tool)
    assert record["accepted"] and record["failures"] == []
    assert record["backend"] == "simulated:8xH100-80GB" and record["simulated"] is True
    assert len(record["gpus"]) == 8 and all(g["serial"] for g in record["gpus"])
    assert {c["measured"] for c in rows(record, "pcie_gen")} == {5}
    assert {c["measured"] for c in rows(record, "retired_pages")} == {"not applicable"}
    assert rows(record, "dcgm_diag")[0]["detail"] == "skipped: not installed"
    assert rows(record, "nccl_all_reduce")[0]["detail"] == "skipped: not installed"


def test_a_simulated_l4_has_no_remapped_rows_and_passes_them_as_not_applicable() -> None:
    record = run_acceptance(open_probe("simulated:1xL4-24GB"), Thresholds(), which=no_tool)
    (remap,) = rows(record, "remapped_rows")
    assert remap["ok"] and remap["measured"] == "not applicable"
    assert rows(record, "pcie_gen")[0]["measured"] == 4


def test_a_host_without_gpus_is_not_accepted_unless_none_are_expected() -> None:
    assert not run_acceptance(open_probe("none"), Thresholds(), which=no_tool)["accepted"]
    assert run_acceptance(open_probe("none"), Thresholds(expect_count=0), which=no_tool)["accepted"]


def test_a_healthy_nvml_machine_is_accepted_with_its_serials_and_xid_watch() -> None:
    record = check_nvml(AcceptanceNvml(2), expect_count=2, model="H200", min_pcie_gen=5)
    assert record["accepted"], record["failures"]
    assert record["backend"] == "nvml" and record["simulated"] is False
    assert [g["serial"] for g in record["gpus"]] == ["1654220000000", "1654220000001"]
    assert [g["pci_bus_id"] for g in record["gpus"]] == ["00000000:00:00.0", "00000000:01:00.0"]
    assert rows(record, "xid_events")[0] == {
        "name": "xid_events", "gpu": None, "ok": True, "measured": [], "expected": [],
        "detail": "",
    }  # fmt: skip


def test_a_missing_gpu_fails_the_count() -> None:
    record = check_nvml(AcceptanceNvml(1), expect_count=2)
    assert failed(record) == {("gpu_count", None)}
    assert record["failures"] == ["gpu_count: measured 1, expected 2 (GPUs missing)"]


def test_no_driver_fails_the_count_with_nvmls_reason() -> None:
    record = check_nvml(AcceptanceNvml(raises={"nvmlInit": pynvml.NVMLError_LibraryNotFound}))
    assert not record["accepted"] and record["gpus"] == []
    assert "NVML Shared Library Not Found" in rows(record, "gpu_count")[0]["detail"]


def test_ecc_off_fails_that_gpu_only() -> None:
    fake = AcceptanceNvml(2)
    fake.results["nvmlDeviceGetEccMode"] = lambda handle: [0, 1] if handle == 1 else [1, 1]
    record = check_nvml(fake)
    assert failed(record) == {("ecc_mode", "GPU-fake-1")}
    (row,) = [c for c in rows(record, "ecc_mode") if not c["ok"]]
    assert row["measured"] == "disabled" and row["detail"] == "after the next reset: enabled"


def test_a_gpu_without_ecc_fails_the_ecc_mode() -> None:
    record = check_nvml(
        AcceptanceNvml(raises={"nvmlDeviceGetEccMode": pynvml.NVMLError_NotSupported})
    )
    assert failed(record) == {("ecc_mode", "GPU-fake-0")}
    assert rows(record, "ecc_mode")[0]["detail"] == "no ECC: NVML: Not Supported"


def test_uncorrected_ecc_errors_fail() -> None:
    fake = AcceptanceNvml()
    fake.results["nvmlDeviceGetTotalEccErrors"] = 3
    assert failed(check_nvml(fake)) == {("ecc_uncorrected_volatile", "GPU-fake-0")}


def test_a_pending_remap_fails_and_a_few_remapped_rows_do_not() -> None:
    fake = AcceptanceNvml()
    fake.results["nvmlDeviceGetRemappedRows"] = (2, 1, 0, 0)
    assert check_nvml(fake)["accepted"]
    fake = AcceptanceNvml()
    fake.results["nvmlDeviceGetRemappedRows"] = (0, 1, 1, 0)
    record = check_nvml(fake)
    assert failed(record) == {("remapped_rows", "GPU-fake-0")}
    assert rows(record, "remapped_rows")[0]["measured"]["pending"] is True


def test_a_narrow_pcie_link_fails_and_an_idle_generation_does_not() -> None:
    fake = AcceptanceNvml()
    fake.results.update(nvmlDeviceGetCurrPcieLinkWidth=8, nvmlDeviceGetCurrPcieLinkGeneration=1)
    record = check_nvml(fake)
    assert failed(record) == {("pcie_width", "GPU-fake-0")}
    assert rows(record, "pcie_width")[0]["detail"] == "x8 of x16: a degraded link"
    assert rows(record, "pcie_gen")[0]["detail"].endswith("now Gen1")


def test_a_gen5_gpu_in_a_gen4_slot_fails_the_generation() -> None:
    fake = AcceptanceNvml()
    fake.results["nvmlDeviceGetMaxPcieLinkGeneration"] = 4
    record = check_nvml(fake)
    assert failed(record) == {("pcie_gen", "GPU-fake-0")}
    assert check_nvml(fake, min_pcie_gen=4)["accepted"]
    assert not check_nvml(AcceptanceNvml(), min_pcie_width=32)["accepted"]


def test_not_supported_retired_pages_are_not_applicable_and_other_errors_fail() -> None:
    pending = "nvmlDeviceGetRetiredPagesPendingStatus"
    record = check_nvml(AcceptanceNvml(raises={pending: pynvml.NVMLError_NotSupported}))
    (row,) = rows(record, "retired_pages")
    assert record["accepted"] and row["measured"] == "not applicable"
    assert row["detail"] == "NVML: Not Supported"
    record = check_nvml(AcceptanceNvml(raises={pending: pynvml.NVMLError_Unknown}))
    (row,) = rows(record, "retired_pages")
    assert not row["ok"] and row["detail"] == "cannot read: NVML: Unknown Error"


def test_a_pending_page_retirement_fails() -> None:
    fake = AcceptanceNvml()
    fake.results.update(
        nvmlDeviceGetRetiredPagesPendingStatus=1, nvmlDeviceGetRetiredPages=[0x1000]
    )
    record = check_nvml(fake)
    assert failed(record) == {("retired_pages", "GPU-fake-0")}
    assert rows(record, "retired_pages")[0]["measured"] == {
        "double_bit_retired": 1,
        "pending": True,
    }


def test_an_unreadable_counter_fails_rather_than_passing() -> None:
    fake = AcceptanceNvml(raises={"nvmlDeviceGetRemappedRows": pynvml.NVMLError_GpuIsLost})
    record = check_nvml(fake)
    assert failed(record) == {("remapped_rows", "GPU-fake-0")}
    assert "GPU is lost" in rows(record, "remapped_rows")[0]["detail"]


def test_an_xid_during_the_check_fails_it() -> None:
    fake = AcceptanceNvml(xids=((0, 79),))
    probe = NvmlProbe(fake)
    with probe.backend:
        assert fake.xids_consumed.wait(5), "the XID watcher never came back for more events"
        record = run_acceptance(probe, Thresholds(), which=no_tool)
    assert failed(record) == {("xid_events", None)}
    assert rows(record, "xid_events")[0]["measured"] == ["GPU-fake-0: XID 79"]


# --- DCGM and NCCL ------------------------------------------------------------------------


def done(stdout: str, rc: int = 0) -> Any:
    return lambda argv, timeout: subprocess.CompletedProcess(argv, rc, stdout, "")


def dcgm_json(*statuses: str) -> str:
    tests = [
        {"name": f"test{i}", "results": [{"status": s}], "test_summary": {"status": s}}
        for i, s in enumerate(statuses)
    ]
    doc = {"DCGM Diagnostic": {"test_categories": [{"category": "Hardware", "tests": tests}]}}
    return "Successfully ran diagnostic\n" + json.dumps(doc)


def test_dcgm_diag_passes_on_no_failed_test_and_names_the_failed_ones() -> None:
    ok = dcgm_check(2, run=done(dcgm_json("Pass", "Skip", "Warn")), which=tool)
    assert ok.ok and ok.measured == {"level": 2, "tests": 3, "failed": []}
    bad = dcgm_check(3, run=done(dcgm_json("Pass", "Fail"), rc=226), which=tool)
    assert not bad.ok and bad.detail == "exit 226: test1"
    crashed = dcgm_check(2, run=done("Error: unable to connect to host engine", rc=1), which=tool)
    assert not crashed.ok and crashed.detail == "exit 1: Error: unable to connect to host engine"


def test_dcgm_diag_that_runs_too_long_fails_and_level_0_skips() -> None:
    def hang(argv: list[str], timeout: float) -> Any:
        raise subprocess.TimeoutExpired(argv, timeout)

    slow = dcgm_check(2, run=hang, which=tool)
    assert not slow.ok and slow.detail == "/usr/bin/dcgmi ran past 900 s"
    assert dcgm_check(0).detail == "skipped: dcgm_level 0"


NCCL_OUT = """#       size  count  type  redop  root  time  algbw  busbw  #wrong
  1073741824  268435456  float  sum  -1  4805.2  223.45  391.04  0
# Out of bounds values : {wrong} OK
# Avg bus bandwidth    : 356.123
"""


def test_nccl_bus_bandwidth_against_its_threshold_and_wrong_values() -> None:
    good = nccl_check(8, 300.0, run=done(NCCL_OUT.format(wrong=0)), which=tool)
    assert good.ok and good.measured == 356.123
    slow = nccl_check(8, 400.0, run=done(NCCL_OUT.format(wrong=0)), which=tool)
    assert not slow.ok and slow.detail == "bus bandwidth below the threshold"
    wrong = nccl_check(8, None, run=done(NCCL_OUT.format(wrong=3)), which=tool)
    assert not wrong.ok and wrong.detail == "3 wrong values"
    assert nccl_check(1, None, which=tool).detail == "skipped: an all-reduce needs two GPUs"


# --- thresholds and the CLI ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"gpus": 8}, "unknown threshold 'gpus'"),
        ({"expect_count": True}, "expect_count must be a number >= 0, got True"),
        ({"min_pcie_gen": 4.5}, "min_pcie_gen must be a whole number, got 4.5"),
        ({"dcgm_level": 7}, "dcgm_level must be 0 (skip) to 4, got 7"),
        ({"model": ""}, "model must be a non-empty string"),
    ],
)
def test_a_bad_profile_is_a_one_line_error(profile: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Thresholds.from_mapping(profile)


def agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any] | None, str]:
    config = tmp_path / "agent.yaml"
    if not config.exists():
        config.write_text("gpu_backend: simulated:4xA100-40GB\n")
    rc = cli.main(["gpu-acceptance", "--config", str(config), *args])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if out else None, err


@pytest.fixture(autouse=True)
def no_tools_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dcgmi and all_reduce_perf absent, whatever the machine has."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


def test_the_cli_exits_0_when_accepted_with_the_configs_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, record, _ = agent(tmp_path, capsys, "--expect-count", "4", "--model", "A100")
    assert rc == 0 and record is not None and record["backend"] == "simulated:4xA100-40GB"


def test_the_cli_exits_1_when_not_accepted_with_the_failures_in_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"expect_count": 8, "min_pcie_gen": 5, "dcgm_level": 3}))
    rc, record, _ = agent(
        tmp_path, capsys, "--backend", "simulated:8xH100-80GB", "--profile", str(profile),
        "--min-pcie-gen", "6",
    )  # fmt: skip
    assert rc == 1 and record is not None
    assert record["thresholds"]["dcgm_level"] == 3 and record["thresholds"]["expect_count"] == 8
    assert failed(record) == {("pcie_gen", g["uuid"]) for g in record["gpus"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "simulated:9xB300"], "unknown GPU profile '9xB300'"),
        (["--profile", "PROFILE"], "unknown threshold 'gpu_count'"),
    ],
)
def test_the_cli_exits_2_on_bad_input_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "p.json").write_text('{"gpu_count": 2}')
    args = [str(tmp_path / "p.json") if a == "PROFILE" else a for a in args]
    rc, record, err = agent(tmp_path, capsys, *args)
    assert rc == 2 and record is None
    assert message in err and len(err.strip().splitlines()) == 1


# --- the aiorch_gpu_acceptance role -------------------------------------------------------

PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"
ROLE = PLAYBOOKS / "roles" / "aiorch_gpu_acceptance"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def role_tasks() -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())}


def test_every_role_variable_is_defaulted_and_documented() -> None:
    used = set(
        re.findall(r"\baiorch_gpu_acceptance_[a-z0-9_]+", (ROLE / "tasks/main.yml").read_text())
    )
    used -= {"aiorch_gpu_acceptance_record"}  # the fact the role sets
    defaults_text = (ROLE / "defaults" / "main.yml").read_text()
    defaults = yaml.safe_load(defaults_text)
    readme = (ROLE / "README.md").read_text()
    assert used == set(defaults)
    assert all(f"`{name}`" in readme for name in defaults)
    for name in defaults:  # each default has its comment above it
        before = defaults_text.split(f"\n{name}:")[0].rstrip().splitlines()[-1]
        assert before.startswith("#") or before.startswith("aiorch_gpu_acceptance_"), name


def test_the_role_finds_the_agent_where_the_edge_agent_role_installs_it() -> None:
    ours = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    agent = yaml.safe_load((PLAYBOOKS / "roles/aiorch_edge_agent/defaults/main.yml").read_text())
    assert ours["aiorch_gpu_acceptance_agent_venv"] == agent["aiorch_edge_agent_venv"]
    assert ours["aiorch_gpu_acceptance_agent_config"] == agent["aiorch_edge_agent_config_path"]


def test_the_check_runs_in_check_mode_and_only_the_record_file_waits_for_a_real_run() -> None:
    tasks = role_tasks()
    check = tasks["Run the GPU acceptance checks"]
    assert check["check_mode"] is False and check["changed_when"] is False
    writes = [
        t for t in tasks.values() if {"ansible.builtin.copy", "ansible.builtin.file"} & set(t)
    ]
    assert len(writes) == 2 and all(t["when"] == "not ansible_check_mode" for t in writes)
    assert all("when" not in t for t in tasks.values() if t not in writes)
    assert "gpu_acceptance" not in (PLAYBOOKS / "site.yml").read_text()


def fake_agent_venv(tmp_path: Path) -> Path:
    """A venv path whose bin/aiorch-agent is this checkout's agent."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "aiorch-agent"
    root = Path(__file__).resolve().parents[1]
    script.write_text(f'#!/bin/sh\nPYTHONPATH={root} exec {sys.executable} -m edge_agent "$@"\n')
    script.chmod(0o755)
    return venv


def play(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """gpu_acceptance.yml on two local hosts: `good` (4 simulated A100s expected) and `bad`
    (8 expected), each with its own record file."""
    venv = fake_agent_venv(tmp_path)
    (tmp_path / "agent.yaml").write_text("gpu_backend: simulated:4xA100-40GB\n")
    host = (
        f"ansible_connection=local ansible_python_interpreter={sys.executable} "
        f"ansible_become=false aiorch_gpu_acceptance_agent_venv={venv} "
        f"aiorch_gpu_acceptance_agent_config={tmp_path / 'agent.yaml'} "
        "aiorch_gpu_acceptance_record_path=" + str(tmp_path) + "/{0}/acceptance.json"
    )
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        f"good {host.format('good')} aiorch_gpu_acceptance_expect_count=4\n"
        f"bad {host.format('bad')} aiorch_gpu_acceptance_expect_count=8 "
        "aiorch_gpu_acceptance_model=H200\n"
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"), "PATH": os.defpath}
    argv = [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(PLAYBOOKS / "gpu_acceptance.yml"), *extra]
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=120)


@pytest.mark.e2e
def test_the_playbook_records_a_pass_and_fails_a_host_with_its_failed_checks(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the record file is written owned by root")
    result = play(tmp_path)
    assert result.returncode == 2, result.stdout[-3000:]
    assert re.search(r"good\s+: ok=8\s+changed=2\s+unreachable=0\s+failed=0", result.stdout)
    assert re.search(r"bad\s+: ok=7\s+changed=2\s+unreachable=0\s+failed=1", result.stdout)
    assert (
        "GPU acceptance failed on bad (simulated:4xA100-40GB): gpu_count: measured 4, "
        "expected 8 (GPUs missing); model GPU-" in result.stdout
    )
    good = json.loads((tmp_path / "good" / "acceptance.json").read_text())
    assert good["accepted"] and good["simulated"] and len(good["gpus"]) == 4
    assert not json.loads((tmp_path / "bad" / "acceptance.json").read_text())["accepted"]


@pytest.mark.e2e
def test_in_check_mode_the_playbook_gates_the_same_and_writes_nothing(tmp_path: Path) -> None:
    result = play(tmp_path, "--check")
    assert result.returncode == 2, result.stdout[-3000:]
    assert re.search(r"good\s+: ok=6\s+changed=0\s+unreachable=0\s+failed=0", result.stdout)
    assert re.search(r"bad\s+: ok=5\s+changed=0\s+unreachable=0\s+failed=1", result.stdout)
    assert "GPU acceptance failed on bad" in result.stdout
    assert not (tmp_path / "good").exists() and not (tmp_path / "bad").exists()
