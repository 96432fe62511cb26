"""Local lab fleet: Debian hosts with systemd and sshd as podman containers.

``Lab(name).up(hosts=3)`` gives real hosts to provision with Ansible and to run
edge agents on; see README.md in this package.
"""

from aiorch.lab.fleet import Lab
from aiorch.lab.layout import LabHost
from aiorch.wait import wait_until

__all__ = ["Lab", "LabHost", "wait_until"]
