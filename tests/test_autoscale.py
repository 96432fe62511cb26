"""Autoscaling's rules, without a hub: the `autoscale` spec block and its errors, the decision
(ceil(load / target), clipped, with delays, never to zero, holding on missing data), and how
agents read the load from a Prometheus page."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from aiorch.deploy.autoscale import Pending, decide
from aiorch.deploy.spec import Autoscale, parse_spec, spec_hash, template_hash
from aiorch.wait import wait_until
from edge_agent.contract.fields import ContractError
from edge_agent.contract.workload import Metric, parse_workload, workload_entry
from edge_agent.workloads.load import LoadMonitor, MetricsError, summed
from tests.fixtures_desired import a_workload
from tests.test_deploy_spec import BASE, problems_of, with_field

METRIC = "aiorch_model_requests_in_flight"
OK = {"max": 3, "metric": METRIC, "target": 2, "port": 8000}
POLICY = Autoscale.model_validate(
    {"min": 1, "max": 4, "metric": METRIC, "target": 2.0, "port": 8000,
     "upDelaySeconds": 30, "downDelaySeconds": 60}
)  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({**OK, "min": 0}, "spec.autoscale.min: must be >= 1 (got 0)"),
        ({**OK, "min": 3, "max": 2}, "spec.autoscale: max 2 is below min 3"),
        (
            {**OK, "metric": "requests-in-flight"},
            "spec.autoscale.metric: must be a Prometheus metric name (got 'requests-in-flight')",
        ),
        (
            {**OK, "port": 9000},
            "spec.autoscale: port 9000 is not a TCP containerPort (declared: 8000)",
        ),
        ({**OK, "target": 0}, "spec.autoscale.target: must be > 0.0 (got 0)"),
        (
            {**OK, "path": "metrics"},
            "spec.autoscale.path: must be a path starting with '/' (got 'metrics')",
        ),
        ({"metric": METRIC, "target": 1, "port": 8000}, "spec.autoscale.max: required"),
        ({**OK, "downDelaySeconds": -1}, "spec.autoscale.downDelaySeconds: must be >= 0 (got -1)"),
    ],
)
def test_each_wrong_autoscale_field_has_its_own_message(value: Any, expected: str) -> None:
    assert problems_of(with_field("spec.autoscale", value)) == [expected]


def test_autoscale_defaults_and_hashes() -> None:
    plain, scaled = parse_spec(BASE), parse_spec(with_field("spec.autoscale", OK))
    policy = scaled.spec.autoscale
    assert policy is not None
    assert (policy.min, policy.path, policy.up_delay_seconds, policy.down_delay_seconds) == (
        1, "/metrics", 300, 600,
    )  # fmt: skip
    # Outside the template: adding or changing it restarts no replica.
    assert template_hash(scaled) == template_hash(plain)
    assert spec_hash(scaled) != spec_hash(plain)
    other = parse_spec(with_field("spec.autoscale", {**OK, "target": 5}))
    assert template_hash(other) == template_hash(plain) and spec_hash(other) != spec_hash(scaled)


def test_load_over_target_rounds_up_within_min_and_max() -> None:
    def to(loads: list[float | None], current: int = 2, fit: int = 10) -> int:
        return decide(POLICY, current, loads, fit, None, 0.0).desired

    assert to([2.0, 2.0]) == 2  # exactly at target
    assert to([2.0, 2.5]) == 3
    assert to([50.0, 50.0]) == 4  # max
    assert to([0.0, 0.0]) == 1  # never below min, never to zero
    assert to([-3.0, 0.0]) == 1  # a negative gauge counts as no load
    assert to([9.0, 9.0], fit=3) == 3  # what placement can fit
    assert to([9.0, 9.0], current=3, fit=3) == 3


def test_a_change_waits_out_its_delay_and_a_dip_restarts_it() -> None:
    first = decide(POLICY, 2, [4.0, 4.0], 10, None, 1000.0)
    assert (first.desired, first.scale_to, first.pending) == (4, None, Pending(4, 1000.0))
    # Wanting more again, even a different count, keeps the since-when.
    later = decide(POLICY, 2, [3.0, 3.0], 10, first.pending, 1029.0)
    assert (later.scale_to, later.pending) == (None, Pending(3, 1000.0))
    done = decide(POLICY, 2, [3.0, 3.0], 10, later.pending, 1030.0)
    assert (done.scale_to, done.pending) == (3, None)
    # Load back at the current count drops what was pending; the delay starts afresh.
    calm = decide(POLICY, 2, [2.0, 2.0], 10, first.pending, 1020.0)
    assert (calm.scale_to, calm.pending) == (None, None)
    # Turning from up to down starts the down delay from now.
    down = decide(POLICY, 2, [0.0, 1.0], 10, first.pending, 1020.0)
    assert down.pending == Pending(1, 1020.0)
    assert decide(POLICY, 2, [0.0, 1.0], 10, down.pending, 1079.0).scale_to is None
    assert decide(POLICY, 2, [0.0, 1.0], 10, down.pending, 1080.0).scale_to == 1


def test_without_delays_it_scales_at_once() -> None:
    eager = POLICY.model_copy(update={"up_delay_seconds": 0, "down_delay_seconds": 0})
    assert decide(eager, 1, [7.0], 10, None, 0.0).scale_to == 4
    assert decide(eager, 4, [0.0] * 4, 10, None, 0.0).scale_to == 1


def test_missing_data_never_scales_down_but_a_lower_bound_may_scale_up() -> None:
    now = 5000.0
    # A cut-off site: nothing reported; the count holds, whatever was pending.
    cut = decide(POLICY, 3, [None, None, None], 10, Pending(1, 0.0), now)
    assert (cut.load, cut.desired, cut.scale_to, cut.pending) == (None, 3, None, None)
    # One replica quiet, the others idle: that says nothing about the quiet one's load.
    partial = decide(POLICY, 3, [0.0, None, 0.0], 10, Pending(1, 0.0), now)
    assert (partial.complete, partial.desired, partial.scale_to) == (False, 3, None)
    # But the replicas that report already ask for more: scaling up is safe.
    busy = decide(POLICY, 2, [7.0, None], 10, Pending(4, 0.0), now)
    assert (busy.complete, busy.scale_to) == (False, 4)


def test_a_count_outside_min_and_max_is_brought_back_at_once() -> None:
    assert decide(POLICY, 9, [0.0] * 9, 10, None, 0.0).scale_to == 4
    assert decide(POLICY.model_copy(update={"min": 2}), 1, [None], 10, None, 0.0).scale_to == 2


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (f"# HELP {METRIC} x\n# TYPE {METRIC} gauge\n{METRIC} 3\n", 3.0),
        (f'{METRIC}{{model="v1"}} 2\n{METRIC}{{model="v2",a="x}} \\"y\\""}} 1.5 1700000000\n', 3.5),
        (f"other_metric 5\n{METRIC}_total 7\n", None),  # only the exact name counts
        (f"\n{METRIC} 0\n\n", 0.0),
    ],
)
def test_the_load_is_the_metric_summed_over_its_label_sets(page: str, expected: Any) -> None:
    assert summed(page, METRIC) == expected


@pytest.mark.parametrize(
    ("page", "error"),
    [
        (f"{METRIC}{{model=v1}} 3\n", "line 1 is not a sample"),
        (f"ok 1\n{METRIC} many\n", "line 2: 'many' is not a number"),
        (f"{METRIC} NaN\n", f"line 1: {METRIC} is NaN"),
        ("<html>busy</html>\n", "line 1 is not a sample"),
    ],
)
def test_a_page_that_is_not_prometheus_text_gives_no_load(page: str, error: str) -> None:
    with pytest.raises(MetricsError, match=error):
        summed(page, METRIC)


def test_the_metric_travels_in_the_workload_entry_and_is_checked() -> None:
    metric = {"name": METRIC, "port": 8080, "path": "/metrics"}
    scaled = parse_workload(a_workload(metric=metric))
    assert scaled.metric == Metric(METRIC, 8080, "/metrics") and scaled.metric_port() == 18080
    assert workload_entry(scaled)["metric"] == metric
    assert "metric" not in workload_entry(parse_workload(a_workload()))  # others as they were
    for bad, field in (({"port": 9000}, "metric.port"), ({"name": "a-b"}, "metric.name")):
        with pytest.raises(ContractError, match=field):
            parse_workload(a_workload(metric={**metric, **bad}))


class _Metrics(ThreadingHTTPServer):
    """A replica's metrics endpoint, its page set by the test."""

    def __init__(self) -> None:
        self.page = f"{METRIC} 2\n"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = outer.page.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_the_agent_scrapes_the_load_off_its_rounds() -> None:
    server, monitor = _Metrics(), LoadMonitor()
    metric, port = Metric(METRIC, 8000, "/metrics"), server.server_address[1]
    try:
        assert monitor.watch("c#0", metric, port) is None  # nothing scraped yet
        wait_until(lambda: monitor.watch("c#0", metric, port) == 2.0, timeout=10, what="load 2")
        server.page = "garbage\n"
        wait_until(
            lambda: monitor.watch("c#0", metric, port) is None,
            timeout=10,
            what="no load once the page stops parsing",
        )
        elsewhere = Metric(METRIC, 8000, "/other")
        assert monitor.watch("c#1", elsewhere, port) is None
    finally:
        monitor.close()
        server.shutdown()
        server.server_close()
