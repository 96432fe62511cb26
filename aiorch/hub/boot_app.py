"""The boot listener (`aiorch hub serve --boot-listen ADDRESS:PORT`): plain HTTP for the
firmware's iPXE, which trusts no CA, so it serves nothing but a machine's boot script and
the ramdisk's files. Its own app, on its own socket: no API route is reachable through it.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from aiorch.errors import InvalidInput, NotFound
from aiorch.hub.app import map_errors
from aiorch.hub.context import HubContext
from aiorch.hub.services.machine_boot import BootFiles, script_for
from aiorch.metal import ipxe

IPXE = "text/plain; charset=utf-8"
HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?\Z")


def create_boot_app(ctx: HubContext) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    map_errors(app)
    directory = ctx.settings.metal_ramdisk_dir
    files = BootFiles(directory) if directory is not None else None

    def boot_url(request: Request) -> str:
        """The listener as the machine reached it (iPXE sends the Host it dialled)."""
        host = request.headers.get("host") or request.url.netloc
        if not HOST.match(host):
            raise InvalidInput(f"not a host and port: {host[:80]!r}")
        return f"http://{host}"

    @app.get("/boot/chain.ipxe", response_class=PlainTextResponse)
    async def chain(request: Request) -> PlainTextResponse:
        return PlainTextResponse(ipxe.chain_script(boot_url(request)), media_type=IPXE)

    @app.get("/boot/{mac}.ipxe", response_class=PlainTextResponse)
    async def machine_script(request: Request, mac: str) -> PlainTextResponse:
        script = await run_in_threadpool(script_for, ctx, mac, boot_url(request), files)
        return PlainTextResponse(script, media_type=IPXE, headers={"Cache-Control": "no-store"})

    @app.get("/boot/files/{name}")
    async def boot_file(name: str) -> FileResponse:
        if files is None:
            raise NotFound("this hub serves no ramdisk (AIORCH_METAL_RAMDISK_DIR is unset)")
        return FileResponse(files.path(name), media_type="application/octet-stream")

    return app
