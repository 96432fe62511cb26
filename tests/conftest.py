"""Shared fixtures live in plugin modules, one per subsystem; tests.tiers keeps the markers,
the time limits and the lab's skip-or-fail honest."""

pytest_plugins = [
    "pytester",
    "tests.tiers",
    "tests.fixtures_hub",
    "tests.fixtures_lab",
    "tests.fixtures_agents",
    "tests.fixtures_provision",
    "tests.fixtures_browser",
    "tests.fixtures_ui",
    "tests.fixtures_machines",
    "tests.fixtures_metal",
]
