"""Signed, transportable site bundles: what an air-gapped site needs, carried across the gap."""
