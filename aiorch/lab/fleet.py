"""The ``Lab``: a named fleet of Debian hosts (podman containers) on an air-gapped network.

State lives in podman (containers and the network carry the ``aiorch.lab``
label) and in the lab's directory under the state dir (SSH keypair,
known_hosts, where the inventory went). ``up`` converges to the wanted host
count and never removes hosts; ``down`` removes exactly what ``up`` made.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from aiorch.errors import UserError
from aiorch.lab import firewall, inventory, layout, netns
from aiorch.lab.faults import Faults
from aiorch.lab.image import ensure_image
from aiorch.lab.layout import LabHost
from aiorch.lab.podman import podman, podman_json, preflight
from aiorch.lab.state import locked, state_dir
from aiorch.wait import wait_until

T = TypeVar("T")
R = TypeVar("R")

BOOT_TIMEOUT = 120.0
SSH_TIMEOUT = 30.0
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
# Settings measured on these machines (LAB-FACTS.md): runc runtime (see podman.py),
# explicit ulimits, systemd as PID 1; privileged so hosts can run nested podman.
RUN_FLAGS = (
    "--systemd=always",
    "--privileged",
    "--ulimit=nofile=4096:4096",
    "--ulimit=nproc=8192:8192",
)


def _parallel(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """Run ``fn`` over ``items`` on a few threads: podman calls mostly wait on I/O."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return list(pool.map(fn, items))


class Lab:
    """A lab fleet by name; cheap to construct, every query asks podman afresh."""

    def __init__(self, name: str = "aiorch", inventory_dir: Path | str = "inventories") -> None:
        self.name = layout.check_name(name)
        self.network = layout.network_name(name)
        self.table = layout.nft_table(name)
        self.dir = state_dir() / "labs" / name
        self._inventory_dir = Path(inventory_dir).absolute()
        self.faults = Faults(self)

    @property
    def ssh_key_path(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        """Where ``up`` wrote the inventory (or will write it, before the first ``up``)."""
        record = self.dir / "lab.json"
        if record.exists():
            return Path(json.loads(record.read_text())["inventory"])
        return self._inventory_dir / f"lab-{self.name}" / "hosts.yml"

    def _network_info(self) -> dict[str, Any] | None:
        if podman("network", "exists", self.network, check=False).returncode != 0:
            return None
        info: dict[str, Any] = podman_json("network", "inspect", self.network)[0]
        if (info.get("labels") or {}).get(layout.LABEL) != self.name:
            raise UserError(
                f"network {self.network} exists but is not lab {self.name}'s; not touching it"
            )
        return info

    def _network(self) -> dict[str, Any]:
        info = self._network_info()
        if info is None:
            raise UserError(f"lab {self.name} is not up: run `aiorch lab up --name {self.name}`")
        return info

    @property
    def gateway(self) -> str:
        """This machine's address on the lab network: the hub listens here for lab hosts."""
        return str(self._network()["subnets"][0]["gateway"])

    @property
    def bridge(self) -> str:  # what a lab VM's tap joins
        return str(self._network()["network_interface"])

    @property
    def subnet(self) -> str:
        return str(self._network()["subnets"][0]["subnet"])

    @property
    def hosts(self) -> list[LabHost]:
        """The lab's hosts in index order (dc1 first), from the containers' labels."""
        found = podman_json(
            "ps", "--all", "--filter", f"label={layout.LABEL}={self.name}", "--format", "json"
        )
        hosts = []
        for c in found:
            labels = c["Labels"]
            hosts.append(
                LabHost(
                    name=labels[f"{layout.LABEL}.host"],
                    index=int(labels[f"{layout.LABEL}.index"]),
                    address=labels[f"{layout.LABEL}.address"],
                    site=labels[f"{layout.LABEL}.site"],
                    role=labels[f"{layout.LABEL}.role"],
                    region=labels[f"{layout.LABEL}.region"],
                    container=c["Names"][0],
                    state=c["State"],
                )
            )
        return sorted(hosts, key=lambda h: h.index)

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise UserError(f"lab {self.name} has no host {name!r}")

    def up(self, hosts: int = 3) -> Path:
        """Bring the lab to at least ``hosts`` running, reachable hosts; return the inventory.

        Idempotent: existing hosts are kept (started or unpaused if need be),
        missing ones are added, cuts are healed.
        """
        if hosts < 1:
            raise UserError("a lab needs at least one host")
        preflight()
        image = ensure_image()
        with locked(self.dir / "lock"):
            self._ensure_keypair()
            net = self._ensure_network()
            bridge, gateway = net["network_interface"], net["subnets"][0]["gateway"]
            firewall.install(self.table, bridge, gateway)  # before any host can talk
            existing = {h.index: h for h in self.hosts}
            subnet = net["subnets"][0]["subnet"]
            ensure_loop_devices(LOOPS_PER_HOST * hosts + LOOP_SPARE)
            _parallel(
                lambda i: self._create(image, i, subnet),
                [i for i in range(1, hosts + 1) if i not in existing],
            )
            for host in existing.values():
                if host.state == "paused":
                    podman("unpause", host.container)
                elif host.state != "running":
                    podman("start", host.container)
            wait_until(
                lambda: gateway in netns.interface_addresses(bridge),
                timeout=10,
                what=f"gateway {gateway} on {bridge}",
            )
            all_hosts = self.hosts
            keys = dict(_parallel(self._ready_key, all_hosts))
            self.known_hosts_path.write_text(inventory.known_hosts(keys))
            path = self.inventory_path
            inventory.write(
                path,
                self.name,
                inventory.render(self.name, all_hosts, self.ssh_key_path, self.known_hosts_path),
            )
            (self.dir / "lab.json").write_text(json.dumps({"inventory": str(path)}) + "\n")
        return path

    def down(self) -> bool:
        """Remove the lab's containers, network, nft table and files; False if none existed."""
        preflight()
        removed = False
        with locked(self.dir / "lock"):
            hosts = self.hosts
            for host in hosts:
                if host.state == "paused":  # a frozen host cannot be killed
                    podman("unpause", host.container, check=False)
            if hosts:
                podman("rm", "--force", "--time", "0", *(h.container for h in hosts))
                removed = True
            if self._network_info() is not None:
                podman("network", "rm", self.network)
                removed = True
            removed = firewall.remove(self.table) or removed
            if (self.dir / "lab.json").exists():
                inv = self.inventory_path
                inv.unlink(missing_ok=True)
                if inv.parent.is_dir() and not any(inv.parent.iterdir()):
                    inv.parent.rmdir()
                removed = True
            removed = removed or self.ssh_key_path.exists()
            shutil.rmtree(self.dir)
        return removed

    def status(self) -> dict[str, Any]:
        """A JSON-able picture of the lab; ``hub_address`` is where lab hosts reach the hub."""
        preflight()
        net = self._network_info()
        hosts = self.hosts
        cut = firewall.cut_addresses(self.table)
        return {
            "lab": self.name,
            "up": net is not None and bool(hosts),
            "network": self.network if net else None,
            "subnet": net["subnets"][0]["subnet"] if net else None,
            "hub_address": net["subnets"][0]["gateway"] if net else None,
            "inventory": str(self.inventory_path) if (self.dir / "lab.json").exists() else None,
            "ssh_key": str(self.ssh_key_path) if self.ssh_key_path.exists() else None,
            "known_hosts": str(self.known_hosts_path) if self.known_hosts_path.exists() else None,
            "hosts": [asdict(h) | {"cut": h.address in cut} for h in hosts],
        }

    def exec(
        self,
        host: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: bytes | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` through ``podman exec`` (not SSH: works during a cut)."""
        return podman(
            "exec",
            *(["--interactive"] if input is not None else []),
            layout.container_name(self.name, host),
            *argv,
            check=check,
            input=input,
            timeout=timeout,
        )

    def pid(self, host: str) -> int:
        """PID (on this machine) of the host's init: the handle on its network namespace."""
        out = podman(
            "inspect", "--format", "{{.State.Pid}}", layout.container_name(self.name, host)
        )
        return int(out.stdout.strip())

    def routes(self, host: str) -> list[str]:
        """The host's IPv4 routes (``default`` if it had one; a lab host has none)."""
        return netns.namespace_routes(self.pid(host))

    def wait_ready(self, hosts: Iterable[LabHost], timeout: float = BOOT_TIMEOUT) -> None:
        """Block until each host finished booting and its sshd answers on the lab network."""
        _parallel(lambda h: self._ready_key(h, timeout), list(hosts))

    def _ensure_keypair(self) -> None:
        if self.ssh_key_path.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"aiorch-lab-{self.name}",
                "-f",
                str(self.ssh_key_path),
            ],
            check=True,
        )

    def _ensure_network(self) -> dict[str, Any]:
        info = self._network_info()
        if info is not None:
            return info
        podman(
            "network",
            "create",
            "--internal",
            "--label",
            f"{layout.LABEL}={self.name}",
            self.network,
        )
        info = self._network()
        clash = netns.overlapping_routes(info["subnets"][0]["subnet"], info["network_interface"])
        if clash:
            podman("network", "rm", self.network)
            raise UserError(
                f"podman picked {info['subnets'][0]['subnet']} for lab {self.name}, "
                f"but this machine already routes it ({', '.join(clash)})"
            )
        return info

    def _create(self, image: str, index: int, subnet: str) -> None:
        name = layout.host_name(index)
        place = layout.placement(index)
        address = layout.host_address(subnet, index)
        container = layout.container_name(self.name, name)
        labels = {
            "": self.name,
            ".host": name,
            ".index": str(index),
            ".address": address,
            ".site": place.site,
            ".role": place.role,
            ".region": place.region,
        }
        podman(
            "create",
            f"--name={container}",
            f"--hostname={name}",
            f"--network={self.network}",
            f"--ip={address}",
            f"--mac-address={layout.host_mac(address)}",
            f"--network-alias={name}",
            *RUN_FLAGS,
            *(f"--label={layout.LABEL}{key}={value}" for key, value in labels.items()),
            image,
            "/sbin/init",
        )
        podman("cp", "-", f"{container}:/", input=self._root_ssh_tar())
        podman("start", container)

    def _root_ssh_tar(self) -> bytes:
        """A tar of /root/.ssh/authorized_keys with the lab's public key, for ``podman cp``."""
        key = self.ssh_key_path.with_suffix(".pub").read_bytes()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            folder = tarfile.TarInfo("root/.ssh")
            folder.type, folder.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(folder)
            keys = tarfile.TarInfo("root/.ssh/authorized_keys")
            keys.size, keys.mode = len(key), 0o600
            tar.addfile(keys, io.BytesIO(key))
        return buf.getvalue()

    def _ready_key(self, host: LabHost, timeout: float = BOOT_TIMEOUT) -> tuple[str, str]:
        """Wait for boot and sshd on ``host``; return (address, its public host key)."""

        def booted() -> bool:
            proc = self.exec(
                host.name,
                ["systemctl", "is-system-running", "--wait"],
                check=False,
                timeout=timeout,
            )
            return proc.stdout.strip() in ("running", "degraded")

        wait_until(booted, timeout=timeout, what=f"{host.name} to boot", interval=0.2)
        wait_until(
            lambda: ssh_banner(host.address),
            timeout=SSH_TIMEOUT,
            what=f"sshd on {host.name} ({host.address}:22)",
        )
        return host.address, self.exec(host.name, ["cat", HOST_KEY]).stdout


LOOPS_PER_HOST = 2  # a data disk plus one spare (the storage tests format a second image)
LOOP_SPARE = 8


def ensure_loop_devices(count: int) -> None:
    """Make sure /dev/loop0..count-1 exist before hosts start.

    A privileged host sees the device nodes this machine had when it started, and the kernel
    only makes 8 by default: the tenth host's loop mount would find no free device.
    """
    for index in range(count):
        node = Path(f"/dev/loop{index}")
        if not node.exists():
            os.mknod(node, stat.S_IFBLK | 0o660, os.makedev(7, index))


def ssh_banner(address: str) -> bool:
    """True once something on ``address:22`` greets like an SSH server."""
    try:
        with socket.create_connection((address, 22), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False
