"""The dashboard's Jobs pages over the real app and store (in process): the queue with its
states and reasons, one job with its transitions and log, the state filter, 404 outside the
user's projects, and cancel only for roles that may (CSRF checked), changing the API's state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from aiorch.hub.context import HubContext
from aiorch.hub.services import images, jobs
from tests.fixtures_ui import CSRF

IMAGE = "localhost/aiorch-model:v1"
JOB = """
apiVersion: aiorch.dev/v1
kind: Job
metadata: {{name: {name}, project: {project}}}
spec: {{image: {image}, command: [python3, train.py], resources: {{gpus: 2}}, maxDuration: 1h}}
"""


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
def ctx(make_context: Callable[..., HubContext]) -> HubContext:
    context = make_context()
    asyncio.run(images.store(context, IMAGE, _chunks(b"archive"), "t", 1 << 20))
    for name, project in (("train", "default"), ("other-team", "secret")):
        text = JOB.format(name=name, project=project, image=IMAGE)
        jobs.submit(context, text, "user:t")
    return context


def test_the_queue_lists_jobs_with_state_and_reason(sign_in):
    page = sign_in().get("/ui/jobs")
    assert page.status_code == 200
    assert 'href="/ui/jobs/train"' in page.text and 'href="/ui/jobs/other-team"' in page.text
    assert "state-queued" in page.text and "submitted" in page.text
    assert '<a href="/ui/jobs">Jobs</a>' in page.text
    assert "No jobs succeeded" in sign_in().get("/ui/jobs", params={"state": "succeeded"}).text
    assert sign_in().get("/ui/jobs", params={"state": "DROP TABLE"}).status_code == 422


def test_one_job_shows_its_transitions_and_log_and_refreshes_while_unfinished(sign_in):
    page = sign_in().get("/ui/jobs/train")
    assert page.status_code == 200
    assert 'id="job-events"' in page.text and "submitted" in page.text
    assert 'hx-get="/ui/jobs/train/live"' in page.text and 'id="job-log"' in page.text
    live = sign_in().get("/ui/jobs/train/live")
    assert live.status_code == 200 and 'id="job-live"' in live.text
    assert "<html" not in live.text, "a fragment for htmx, not a whole page"
    assert sign_in().get("/ui/jobs/nope").status_code == 404


def test_a_viewer_sees_only_its_projects_and_no_cancel(sign_in):
    viewer = sign_in(role="viewer")
    listed = viewer.get("/ui/jobs").text
    assert "/ui/jobs/train" in listed and "other-team" not in listed
    assert viewer.get("/ui/jobs/other-team").status_code == 404
    page = viewer.get("/ui/jobs/train").text
    assert 'id="job-cancel"' not in page
    csrf = CSRF.search(page).group(1)  # type: ignore[union-attr]
    refused = viewer.post("/ui/jobs/train/cancel", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403


def test_an_operator_cancels_by_the_button_and_a_forged_post_is_refused(ctx, sign_in):
    operator = sign_in(role="operator")
    page = operator.get("/ui/jobs/train").text
    assert 'id="job-cancel"' in page
    assert operator.post("/ui/jobs/train/cancel").status_code == 403  # no CSRF token
    assert jobs.show(ctx, "train")["state"] == "queued"
    csrf = CSRF.search(page).group(1)  # type: ignore[union-attr]
    answer = operator.post("/ui/jobs/train/cancel", headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200 and "state-cancelled" in answer.text
    assert 'id="job-cancel"' not in answer.text and "hx-trigger" not in answer.text
    assert jobs.show(ctx, "train")["state"] == "cancelled"
