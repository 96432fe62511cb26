"""The aiorch hub: HTTP API over a service layer over a SQLite store."""
