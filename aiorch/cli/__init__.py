"""The `aiorch` command line: talks to the hub over HTTP, never to its database."""
