"""The web dashboard at /ui: pages rendered on the hub (Jinja2), live parts by htmx and
server-sent events, static assets vendored from npm and served by the hub itself, so it works
in an air-gapped site with no Node and no CDN."""
