"""The hub's public-key infrastructure: its CAs, the certificates it issues, its TLS listener."""
