"""The record of a batch's finished outputs, so that running it again redoes only the rest.

A batch command (``strip DIR --out-dir OUT``) keeps ``OUT/.ckptsurgery-batch.json``: for each
input checkpoint, the identity of its files (size and modification time, or ETag for remote
ones), the command and options that made the output, the output (a checkpoint prefix, a file
or a folder) and the identity of the output's files once it was written and verified. An
input counts as finished only when all of that still holds; an output that a killed run left
(staged writes leave none or a complete one, never recorded as finished) is redone. The file is replaced whole at each change (atomically
on a disk; an object store replaces an object whole).

Imports :mod:`ckptsurgery.formats`; no TensorFlow.
"""

from __future__ import annotations

import json

from ..formats import storage
from ..formats.checkpoint import locate

__all__ = ["MANIFEST_NAME", "Manifest", "files_identity", "output_identity"]

MANIFEST_NAME = ".ckptsurgery-batch.json"
_VERSION = 1


def files_identity(prefix: str) -> dict[str, dict]:
    """The identity of each file of the checkpoint at ``prefix``, by file name."""
    return {storage.basename(p): storage.identity(p) for p in locate(prefix).paths}


def output_identity(output: str) -> dict[str, dict]:
    """The identity of each file of an output, by name: a checkpoint (``output`` its prefix),
    a single file (a ``.safetensors``), or a folder (a transformers folder, by path inside)."""
    if storage.isfile(output):
        return {storage.basename(output): storage.identity(output)}
    if storage.isdir(output):
        root = output.rstrip("/")
        return {path[len(root) + 1:]: storage.identity(path)
                for path in storage.walk_files(root)}
    return files_identity(output)


class Manifest:
    """The manifest in the output folder ``folder`` (read if it is there)."""

    def __init__(self, folder: str):
        self.path = storage.join(folder, MANIFEST_NAME)
        self.entries: dict[str, dict] = {}
        if storage.isfile(self.path):
            with storage.open_read(self.path) as f:
                data = json.loads(f.read().decode("utf-8"))
            if data.get("version") == _VERSION:
                self.entries = data.get("inputs", {})

    def finished(self, source: str, identity: dict, command: dict, output: str) -> bool:
        """Whether ``source`` (with these files) was made into ``output`` by ``command`` and
        that output is still as it was written."""
        entry = self.entries.get(source)
        if not entry or entry.get("state") != "done":
            return False
        if (entry.get("input"), entry.get("command"), entry.get("output")) != (
                identity, command, output):
            return False
        try:
            return output_identity(output) == entry.get("output_files")
        except Exception:  # gone, or no longer a checkpoint
            return False

    def owns(self, output: str) -> bool:
        """Whether a run of this batch started writing ``output`` (so it may replace it)."""
        return any(e.get("output") == output for e in self.entries.values())

    def start(self, items: list[tuple[str, dict, dict, str]]) -> None:
        """Record ``(source, identity, command, output)`` items as started, before any runs."""
        for source, identity, command, output in items:
            self.entries[source] = {"state": "started", "input": identity, "command": command,
                                    "output": output}
        self.save()

    def finish(self, source: str) -> None:
        """Record ``source``'s output, just written and verified, as finished."""
        entry = self.entries[source]
        entry["state"] = "done"
        entry["output_files"] = output_identity(entry["output"])
        self.save()

    def save(self) -> None:
        data = json.dumps({"version": _VERSION, "inputs": self.entries}, indent=1,
                          sort_keys=True).encode()
        if storage.is_url(self.path):
            storage.write_bytes(self.path, data)
            return
        import os

        from ..formats.output import atomic_file

        os.makedirs(storage.dirname(self.path), exist_ok=True)
        with atomic_file(self.path) as tmp, open(tmp, "wb") as f:
            f.write(data)
