"""The test tiers tell the truth: a missing lab fails CI and `make test` (and only skips on a
laptop), markers follow the fixtures, an unmarked hub start fails, every test has a limit.

Inner pytest sessions (pytester) run with the timeout plugin off: its alarm is the outer
test's, and an inner session would cancel it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiers import LAB_GROUP, TIMEOUTS, lab_required, missing_lab

PLUGINS = 'pytest_plugins = ["tests.tiers", "tests.fixtures_hub", "tests.fixtures_lab"]\n'


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(PLUGINS)
    return pytester


@pytest.fixture
def no_lab_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH with no podman, nft or ip on it: the lab preflight fails for real."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.parametrize("env", [{}, {"CI": "false"}, {"CI": "0"}, {"AIORCH_REQUIRE_LAB": "0"}])
def test_missing_lab_skips_on_a_developer_machine(env: dict[str, str]) -> None:
    assert not lab_required(env)
    with pytest.raises(pytest.skip.Exception, match="no lab on this machine: no podman"):
        missing_lab("no podman", env)


@pytest.mark.parametrize("env", [{"CI": "true"}, {"CI": "1"}, {"AIORCH_REQUIRE_LAB": "1"}])
def test_missing_lab_fails_under_ci_and_make_test(env: dict[str, str]) -> None:
    assert lab_required(env)
    with pytest.raises(pytest.fail.Exception, match=r"the lab is required here.*no podman"):
        missing_lab("no podman", env)


@pytest.mark.usefixtures("no_lab_tools")
@pytest.mark.parametrize(
    ("env", "outcome"), [("CI=true", "errors"), ("AIORCH_REQUIRE_LAB=1", "errors"), ("", "skipped")]
)
def test_lab_tests_without_podman_fail_ci_and_make_test_and_skip_elsewhere(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, env: str, outcome: str
) -> None:
    """Through a lab fixture, and for a lab test whose own body would need podman (the demo):
    the check comes first, so neither ends as an unrelated error on a laptop."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("AIORCH_REQUIRE_LAB", raising=False)
    if env:
        monkeypatch.setenv(*env.split("="))
    inner.makepyfile(
        """
        import pytest

        def test_uses_the_lab(lab_factory): pass

        @pytest.fixture
        def site():
            raise FileNotFoundError("apt-get")

        @pytest.mark.lab
        def test_runs_the_demo(site): raise FileNotFoundError("podman")
        """
    )
    result = inner.runpytest("-p", "no:timeout")
    result.assert_outcomes(**{outcome: 2})  # type: ignore[arg-type]
    if outcome == "errors":
        result.stdout.fnmatch_lines(["*the lab is required here*aiorch lab needs*"])
    result.stdout.no_fnmatch_line("*FileNotFoundError*")


def test_hub_and_lab_fixtures_mark_their_tests(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        def test_plain(): pass
        def test_own_hub(hub): pass
        def test_shared_hub(admin): pass
        def test_fleet(lab): pass
        @pytest.mark.timeout(5)
        def test_own_limit(hub): pass
        """
    )
    items, _ = inner.inline_genitems("-p", "no:timeout")
    marks = {
        item.name: (
            {m for m in ("e2e", "lab") if item.get_closest_marker(m)},
            item.get_closest_marker("timeout").args[0]  # type: ignore[union-attr]
            if item.get_closest_marker("timeout")
            else None,
        )
        for item in items
    }
    assert marks == {
        "test_plain": (set(), None),  # the ini's default applies
        "test_own_hub": ({"e2e"}, TIMEOUTS["e2e"]),
        "test_shared_hub": ({"e2e"}, TIMEOUTS["e2e"]),
        "test_fleet": ({"lab"}, TIMEOUTS["lab"]),
        "test_own_limit": ({"e2e"}, 5),
    }
    unit = inner.runpytest("-p", "no:timeout", "--collect-only", "-q", "-m", "not e2e and not lab")
    assert [line.split("::")[-1] for line in unit.outlines if "::" in line] == ["test_plain"]


def test_the_lab_tier_is_one_xdist_group_and_other_tests_group_by_module(
    inner: pytest.Pytester,
) -> None:
    """`make test` runs ``-n 2 --dist loadgroup``: every lab test on one worker, in order,
    with the one shared lab; a module's other tests together, so its fixtures are built once."""
    inner.makepyfile(
        test_a="import pytest\ndef test_fleet(lab): pass\n@pytest.mark.lab\ndef test_mark(): pass",
        test_b="def test_plain(): pass\ndef test_own_hub(hub): pass\n",
    )
    items, _ = inner.inline_genitems("-p", "no:timeout")
    groups = {item.name: [m.args[0] for m in item.iter_markers("xdist_group")] for item in items}
    assert groups == {
        "test_fleet": [LAB_GROUP],
        "test_mark": [LAB_GROUP],
        "test_plain": ["test_b.py"],
        "test_own_hub": ["test_b.py"],
    }


def test_a_test_that_starts_a_hub_without_the_e2e_marker_fails(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from aiorch.hub.process import HubProcess

        def test_sneaky(tmp_path):
            hub = HubProcess(tmp_path / "hub")
            try:
                hub.start()
                raise AssertionError("the hub started")
            finally:
                hub.stop()
        """
    )
    result = inner.runpytest("-p", "no:timeout")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*starts a real hub under uvicorn but is not marked e2e*"])
    result.stdout.no_fnmatch_line("*the hub started*")


def test_a_module_lab_fixture_without_the_lab_marker_fails(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest
        from tests.tiers import require_lab

        @pytest.fixture
        def fleet():
            require_lab()

        def test_forgot_the_marker(fleet): pass
        """
    )
    result = inner.runpytest("-p", "no:timeout")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*uses the podman lab but is not marked lab*"])


def test_every_test_has_a_time_limit(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) < min(TIMEOUTS.values())
