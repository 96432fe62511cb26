"""aiorch: hub, CLI and lab for on-prem GPU and edge fleets."""

__version__ = "0.1.0"
