"""Deployment and configuration packages, as the `dlthub` CLI builds them.

A package is a `.tar.gz` with `manifest.yaml` at its root (`{engine_version,
files: [{relative_path, size_in_bytes, sha3_256, linkname?}]}`) and the files
under `files/`. Its content hash is dlt's `compute_package_content_hash`, so
the client sees the hash it computed and skips an unchanged upload.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from dlt._workspace.deployment.package_builder import (
    DEFAULT_DEPLOYMENT_FILES_FOLDER,
    DEFAULT_MANIFEST_FILE_NAME,
    PackageBuilder,
    compute_package_content_hash,
)

MAX_PACKAGE_BYTES = 200 * 1024 * 1024


class PackageError(ValueError):
    """An upload that is not a package dlt would build; the reason says what is wrong."""


@dataclass(frozen=True)
class ReadPackage:
    content_hash: str
    files: list[dict[str, Any]]
    size_bytes: int

    @property
    def profiles(self) -> list[str]:
        """Profiles a configuration package has files for (`prod.secrets.toml` -> `prod`)."""
        found = set()
        for f in self.files:
            name = PurePosixPath(f["relative_path"]).name
            for suffix in (".config.toml", ".secrets.toml"):
                if name.endswith(suffix) and name != suffix[1:]:
                    found.add(name[: -len(suffix)])
        return sorted(found)


def _safe_relative(path: str) -> PurePosixPath:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise PackageError(f"unsafe path in package: {path!r}")
    return p


def read_package(data: bytes) -> ReadPackage:
    """Check a package against its own manifest; answers its content hash and files."""
    if len(data) > MAX_PACKAGE_BYTES:
        raise PackageError(f"package larger than {MAX_PACKAGE_BYTES // (1024 * 1024)} MiB")
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as ex:
        raise PackageError(f"not a gzipped tar archive: {ex}") from ex
    with tar:
        try:
            raw_manifest = tar.extractfile(DEFAULT_MANIFEST_FILE_NAME)
        except KeyError as ex:
            raise PackageError(f"no {DEFAULT_MANIFEST_FILE_NAME} at the package root") from ex
        if raw_manifest is None:
            raise PackageError(f"{DEFAULT_MANIFEST_FILE_NAME} is not a file")
        try:
            manifest = yaml.safe_load(raw_manifest.read())
            listed = list(manifest["files"])
        except (yaml.YAMLError, KeyError, TypeError) as ex:
            raise PackageError(f"unreadable {DEFAULT_MANIFEST_FILE_NAME}: {ex}") from ex
        members = {m.name: m for m in tar.getmembers()}
        files: list[dict[str, Any]] = []
        size = 0
        for item in sorted(listed, key=lambda x: x["relative_path"]):
            rel = _safe_relative(str(item["relative_path"]))
            member = members.get(f"{DEFAULT_DEPLOYMENT_FILES_FOLDER}/{rel}")
            if member is None:
                raise PackageError(f"{rel} is in the manifest but not in the package")
            if item.get("linkname") is not None:
                digest = hashlib.sha3_256(str(item["linkname"]).encode()).digest()
            else:
                fileobj = tar.extractfile(member)
                if fileobj is None:
                    raise PackageError(f"{rel} is not a regular file")
                digest = hashlib.sha3_256(fileobj.read()).digest()
                size += member.size
            if base64.b64encode(digest).decode("ascii") != item["sha3_256"]:
                raise PackageError(f"{rel} does not match its sha3_256 in the manifest")
            files.append(
                {
                    "relative_path": str(rel),
                    "sha3_256": item["sha3_256"],
                    "size_bytes": int(item.get("size_in_bytes", member.size)),
                    "linkname": item.get("linkname"),
                }
            )
    content_hash = compute_package_content_hash(
        {
            "engine_version": 1,
            "files": [
                {"relative_path": f["relative_path"], "sha3_256": f["sha3_256"]} for f in files
            ],
        }  # type: ignore[typeddict-item]
    )
    return ReadPackage(content_hash, files, size)


def hash_dir_name(content_hash: str) -> str:
    return base64.urlsafe_b64decode(content_hash.replace("+", "-").replace("/", "_")).hex()[:32]


def store_package(data: bytes, package: ReadPackage, root: Path, subdir: str = "") -> Path:
    """Unpack a package once per content hash under `root`; answers its folder."""
    target = root / hash_dir_name(package.content_hash)
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".unpacking-"))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for item in package.files:
            rel = _safe_relative(item["relative_path"])
            member = tar.getmember(f"{DEFAULT_DEPLOYMENT_FILES_FOLDER}/{rel}")
            dest = tmp / subdir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if item.get("linkname") is not None:
                os.symlink(item["linkname"], dest)
                continue
            fileobj = tar.extractfile(member)
            assert fileobj is not None
            dest.write_bytes(fileobj.read())
            dest.chmod((member.mode & 0o755) | 0o600)
    try:
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another upload of the same hash won
    return target


def runtime_dir(root: Path, code_dir: Path, config_dir: Path | None) -> Path:
    """The folder runs start in: the code with the configuration's `.dlt` files laid over it."""
    name = code_dir.name + ("-" + config_dir.name if config_dir is not None else "")
    target = root / name
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
    shutil.copytree(code_dir, tmp, symlinks=True, dirs_exist_ok=True)
    if config_dir is not None:
        shutil.copytree(config_dir, tmp / ".dlt", symlinks=True, dirs_exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_packages(workspace: Path) -> tuple[bytes, str, bytes, str]:
    """Package a local workspace as `dlthub deploy` does: `(code, hash, configuration, hash)`."""
    from dlt._workspace._workspace_context import active
    from dlt._workspace.deployment.file_selector import (
        ConfigurationFileSelector,
        WorkspaceFileSelector,
    )

    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        context = active()
        builder = PackageBuilder(context=context)
        code, config = io.BytesIO(), io.BytesIO()
        code_hash = builder.write_package_to_stream(WorkspaceFileSelector(context), code)
        config_hash = builder.write_package_to_stream(ConfigurationFileSelector(context), config)
    finally:
        os.chdir(cwd)
    return code.getvalue(), code_hash, config.getvalue(), config_hash
