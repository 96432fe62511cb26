"""The host's model cache: the files of the models desired workloads mount.

One directory per model, `<cache>/<digest hex>/<path>`, shared by every workload that names
the model. Files come down into `<cache>/.incoming/<hex>/` (resuming after a cut, each
verified by its sha256) and the directory moves into place only once every file is there, so
a model directory that exists is complete and a container never sees half a model. Models no
desired workload names any more are removed. `.transfers.json` records, per file, the bytes
that came over the wire for it, which is how a cut download proves it resumed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.contract.model import ModelFile, ModelRef
from edge_agent.state import read_json, write_private
from edge_agent.workloads.download import Transfer
from edge_agent.workloads.jobs import Jobs, Outcome

log = logging.getLogger("aiorch.agent.workloads")

FetchFile = Callable[[ModelRef, ModelFile, Path], Transfer]  # download one file to dest
INCOMING = ".incoming"
TRANSFERS = ".transfers.json"
_HEX = re.compile(r"^[0-9a-f]{64}\Z")


class ModelError(Exception):
    """A model that can't be fetched; the message says why, in one line."""


class ModelCache:
    def __init__(
        self, directory: Path, fetch: FetchFile | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.dir = directory
        self.fetch = fetch
        self.jobs = Jobs("aiorch-models", clock)
        # Digests other users of the cache (the job runner) need, by user: prune keeps them.
        self.pinned: dict[str, set[str]] = {}

    def path(self, model: ModelRef) -> Path:
        return self.dir / model.hex

    def held(self) -> list[str]:
        """The digests of the complete models in the cache."""
        if not self.dir.is_dir():
            return []
        return sorted(f"sha256:{p.name}" for p in self.dir.iterdir() if _HEX.match(p.name))

    def resolve(self, model: ModelRef, deadline: float) -> Outcome:
        """Ready once every file is in the cache; else pending (fetching) or failed."""
        if not self.jobs.running(model.digest) and self.path(model).is_dir():
            return Outcome("ready", result=self.path(model))
        what = f"model {model.name} ({model.digest[:19]})"
        outcome = self.jobs.poll(model.digest, lambda: self._fetch(model), deadline, what)
        if outcome.state == "pending" and outcome.reason is None:
            return Outcome("pending", f"fetching {what}: {self._progress(model)}")
        return outcome

    def prune(self, keep: set[str]) -> None:
        """Remove the models (complete or partly fetched) no desired workload (or pinned
        user) names."""
        keep = keep.union(*self.pinned.values())
        busy = keep | self.jobs.keep_only(keep)
        for folder in (self.dir, self.dir / INCOMING):
            for path in folder.iterdir() if folder.is_dir() else []:
                if _HEX.match(path.name) and f"sha256:{path.name}" not in busy:
                    shutil.rmtree(path, ignore_errors=True)
                    log.info("model cache: removed %s (no workload names it)", path.name[:12])

    def transfers(self) -> dict[str, dict[str, int | bool]]:
        return read_json(self.dir / TRANSFERS) or {}

    def close(self) -> None:
        self.jobs.close()

    def _fetch(self, model: ModelRef) -> Path:
        """Runs on the worker thread: every missing file, verified, then the move into place."""
        incoming = self.dir / INCOMING / model.hex
        for entry in model.files:
            dest = incoming / entry.path
            if dest.is_file() and dest.stat().st_size == entry.size:
                continue  # verified before it got its name
            if self.fetch is None:
                raise ModelError("not in the model cache and no hub to fetch it from")
            transfer = self.fetch(model, entry, dest)
            self._record(model, entry, transfer)
        for folder, _dirs, files in os.walk(incoming):  # the container may run as anyone
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        final = self.path(model)
        try:
            os.replace(incoming, final)
        except OSError:  # another job got there first
            if not final.is_dir():
                raise
            shutil.rmtree(incoming, ignore_errors=True)
        log.info("model %s %s: all %d files cached", model.name, model.hex[:12], len(model.files))
        return final

    def _record(self, model: ModelRef, entry: ModelFile, transfer: Transfer) -> None:
        records = self.transfers()
        records[f"{model.hex}/{entry.path}"] = {
            "size": transfer.size,
            "received": transfer.received,
            "resumed": transfer.resumed,
        }
        write_private(self.dir / TRANSFERS, records)

    def _progress(self, model: ModelRef) -> str:
        incoming = self.dir / INCOMING / model.hex
        done = 0
        for entry in model.files:
            for name in (entry.path, entry.path + ".partial"):
                candidate = incoming / name
                if candidate.is_file():
                    done += candidate.stat().st_size
                    break
        total = sum(f.size for f in model.files)
        return f"{done} of {total} bytes"
