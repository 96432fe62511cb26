"""Marks playbooks/ as the package ``aiorch.playbooks`` (setup.py), so a wheel ships it."""
