"""Shared fixtures live in plugin modules, one per subsystem."""

pytest_plugins = [
    "tests.fixtures_hub",
    "tests.fixtures_lab",
    "tests.fixtures_agents",
    "tests.fixtures_provision",
]
