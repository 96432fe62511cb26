"""aiorch edge agent: pull-based, survives disconnection, no hub dependencies."""

__version__ = "0.1.0"
