"""Local lab fleet: Debian hosts with systemd and sshd as podman containers."""
