"""Packages crafted by hand, as an attacker (or a broken client) would send them."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from typing import Any

import yaml


def sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha3_256(data).digest()).decode("ascii")


def craft(*entries: dict[str, Any], manifest: list[dict[str, Any]] | None = None) -> bytes:
    """A package as dlt lays it out. Each entry: `path`, and `data` (a file) or `link`
    (a symlink); `listed=False` keeps it out of the manifest, `linkname=False` lists a link
    without its linkname; `mode` sets a file's mode."""
    out = io.BytesIO()
    listing = []
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for e in entries:
            info = tarfile.TarInfo(f"files/{e['path']}")
            if "link" in e:
                info.type, info.linkname = tarfile.SYMTYPE, e["link"]
                tar.addfile(info)
                item = {
                    "relative_path": e["path"],
                    "size_in_bytes": 0,
                    "sha3_256": sha(e["link"].encode()),
                }
                if e.get("linkname", True):
                    item["linkname"] = e["link"]
            else:
                info.size, info.mode = len(e["data"]), e.get("mode", 0o644)
                tar.addfile(info, io.BytesIO(e["data"]))
                item = {
                    "relative_path": e["path"],
                    "size_in_bytes": len(e["data"]),
                    "sha3_256": sha(e["data"]),
                }
            if e.get("listed", True):
                listing.append(item)
        raw = yaml.safe_dump(
            {"engine_version": 1, "files": manifest if manifest is not None else listing}
        ).encode()
        info = tarfile.TarInfo("manifest.yaml")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return out.getvalue()


class Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n
