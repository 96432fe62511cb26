"""`aiorch hub serve`: open the store and the CA, bootstrap the admin token, and run uvicorn
on its sockets, HTTPS only."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from aiorch.endpoint import write_endpoint
from aiorch.errors import UserError
from aiorch.hub import logs
from aiorch.hub.app import create_app
from aiorch.hub.boot_app import create_boot_app
from aiorch.hub.connections import (
    ConnectionLimits,
    default_max_connections,
    protocol_class,
    rate_limit_logs,
)
from aiorch.hub.context import HubContext
from aiorch.hub.pki.keyfiles import init_lock
from aiorch.hub.pki.listener import Listener, OperatorCert, listen_names
from aiorch.hub.services import audit_checkpoints, bundles, tokens
from aiorch.hub.settings import HubSettings
from aiorch.hub.store import Store
from aiorch.metal.bootnet import BootNet
from aiorch.repo.serve import mount_live_repo, mount_repo

log = logging.getLogger("aiorch.hub")


def parse_listen(value: str, option: str = "--listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{option} wants ADDRESS:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _url_host(host: str) -> str:
    """The address a local client dials: a wildcard listener answers on loopback."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this. Without it a response written in two parts waits
    # for the client's delayed ACK: 40 ms on every request (the event loop sets it only on
    # sockets it binds itself).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def open_context(settings: HubSettings) -> HubContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    with init_lock(settings.data_dir):  # two hubs starting at once migrate one at a time
        store = Store(settings.db_path, synchronous=settings.store_synchronous).open()
    ctx = HubContext(store=store, settings=settings)
    log.warning("hub CA pin %s (enrollment tokens carry it)", ctx.authority.token_pin)
    audit_checkpoints.prepare(ctx)  # refuses a loose audit.key before serving anything
    created = tokens.ensure_admin_token(ctx)
    if created:
        log.warning("first start: admin token written to %s", created)
    return ctx


def serve(
    settings: HubSettings,
    addresses: list[tuple[str, int]],
    log_level: str = "info",
    log_format: str = "text",
    repo_dir: Path | None = None,
    limits: ConnectionLimits | None = None,
    boot_address: tuple[str, int] | None = None,
    boot_dhcp: tuple[str, str] | None = None,
) -> None:
    limits = limits or ConnectionLimits(max_connections=default_max_connections())
    bootnet = _bootnet(settings, boot_address, boot_dhcp)  # checked before anything starts
    sockets = [_bind(host, port) for host, port in addresses]
    boot_socket = _bind(*boot_address) if boot_address is not None else None
    logs.configure(log_level, log_format)
    ctx = open_context(settings)
    operator = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        operator = OperatorCert(settings.tls_cert, settings.tls_key)
    names = listen_names([host for host, _ in addresses], settings.tls_names)
    ctx.listener = Listener(settings.data_dir, names, operator)
    ctx.listener.ensure(ctx.authority, ctx.clock())
    ssl_context = ctx.listener.context(ctx.authority)
    host, port = sockets[0].getsockname()[:2]
    write_endpoint(settings.data_dir, f"https://{_url_host(host)}:{port}")
    app = create_app(ctx)
    ctx.repo_dir = repo_dir
    if repo_dir is not None:
        mount_repo(app, repo_dir)
    else:  # the imported content, as it is at each request (an import swaps it live)
        mount_live_repo(app, lambda: bundles.served_repo(ctx))
    config = uvicorn.Config(
        app,
        http=protocol_class(limits, ssl_context),  # it starts TLS itself, inside its guard
        log_level=log_level,
        log_config=None,  # keep logs.configure's handlers: uvicorn's lines in the same format
        access_log=False,  # logs.RequestIds logs each request, with its id
        timeout_keep_alive=30,
        proxy_headers=False,
    )
    rate_limit_logs()  # after uvicorn.Config, which configures the loggers
    server = _Main(config)
    boot = None
    if boot_socket is not None:
        boot_config = uvicorn.Config(
            create_boot_app(ctx),
            http=protocol_class(limits),  # plain HTTP: the firmware's iPXE trusts no CA
            log_level=log_level,
            log_config=None,
            access_log=False,
            proxy_headers=False,
        )
        boot = (_Beside(boot_config), boot_socket)
    if bootnet is not None:
        server.on_exit.append(_running(bootnet.start()))
    try:
        asyncio.run(_serve_all(server, boot, sockets))
    finally:
        ctx.store.close()


def _running(child: subprocess.Popen[bytes]) -> Callable[[], None]:
    """How to stop a child the hub started."""

    def stop() -> None:
        child.terminate()
        child.wait(timeout=10)

    return stop


class _Main(uvicorn.Server):
    """The hub's server, which stops its children (the proxy-DHCP) once it has shut down:
    uvicorn re-raises a stopping signal on its way out, so a `finally` after it never runs."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.on_exit: list[Callable[[], None]] = []

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                for stop in self.on_exit:
                    stop()


def _bootnet(
    settings: HubSettings, boot: tuple[str, int] | None, dhcp: tuple[str, str] | None
) -> BootNet | None:
    """The proxy-DHCP beside the boot listener, pointing iPXE at the listener's address. Its
    files (Debian's iPXE binaries, public) sit under /run, where dnsmasq's unprivileged user
    reads them: the data directory is the hub's alone."""
    if dhcp is None:
        return None
    if boot is None or boot[0] in ("0.0.0.0", "::", ""):
        raise UserError("--boot-dhcp needs --boot-listen on an address the machines can reach")
    key = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:12]
    interface, subnet = dhcp
    return BootNet(interface, subnet, f"http://{_url_host(boot[0])}:{boot[1]}",
                   Path("/run/aiorch") / f"bootnet-{key}")  # fmt: skip


class _Beside(uvicorn.Server):
    """A second server in the same loop: the first one owns the signals and, when it stops,
    stops this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_all(
    server: _Main,
    boot: tuple[uvicorn.Server, socket.socket] | None,
    sockets: list[socket.socket],
) -> None:
    if boot is None:
        await server.serve(sockets=sockets)
        return
    beside, boot_socket = boot
    task = asyncio.create_task(beside.serve(sockets=[boot_socket]))
    try:
        await server.serve(sockets=sockets)
    finally:
        beside.should_exit = True
        await task
