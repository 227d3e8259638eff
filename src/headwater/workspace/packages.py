"""Deployment and configuration packages, as the `dlthub` CLI builds them.

A package is a `.tar.gz` with `manifest.yaml` at its root (`{engine_version,
files: [{relative_path, size_in_bytes, sha3_256, linkname?}]}`) and the files
under `files/`. Its content hash is dlt's `compute_package_content_hash`, so
the client sees the hash it computed and skips an unchanged upload.

An upload is untrusted: `unpack_package` gunzips it to disk within bounds
(expanded size, compression ratio, member count), checks every path against
what a filesystem can hold and what a package may hold (no `.headwater/`, no
link that leaves the package, no path through a link), verifies every file
against its sha3_256 while it extracts, and only then moves the folder into
place. Nothing is kept when any check fails.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import yaml
from dlt._workspace.deployment.package_builder import (
    DEFAULT_DEPLOYMENT_FILES_FOLDER,
    DEFAULT_MANIFEST_FILE_NAME,
    PackageBuilder,
    compute_package_content_hash,
)

from headwater.core.errors import HeadwaterError

MAX_PACKAGE_BYTES = 200 * 1024 * 1024
"""What an upload may weigh, compressed."""
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
"""What an upload may weigh once gunzipped (the tar: files, headers, manifest)."""
MAX_PACKAGE_FILES = 20_000
"""How many members a package may hold."""
MAX_RATIO = 200
"""How much a package may expand (gunzipped / gzipped bytes) once past `RATIO_FLOOR`:
source code expands 5-20 times, a gzip bomb about 1,000 times."""
RATIO_FLOOR = 32 * 1024 * 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
NAME_MAX = 255
"""Bytes in one path component (Linux, macOS)."""
PATH_MAX = 4096
RUN_DIR_SLACK = 160
"""Room kept in PATH_MAX for the folder runs start in (`run/<hash>-<hash>/.dlt/`)."""
HOME_DIR = ".headwater"
CHUNK = 1024 * 1024
CONTENT_HASH_HEADER = "X-Headwater-Content-Hash"
"""The header a downloaded package's content hash travels in (server to worker)."""


class PackageError(HeadwaterError, ValueError):
    """An upload that is not a package dlt would build; the reason says what is wrong."""

    code = "invalid_package"
    status = 400


class PackageTooLarge(PackageError):
    """An upload past one of the bounds above (413)."""

    code = "payload_too_large"
    status = 413


class PackageMissing(HeadwaterError):
    """A recorded package whose files are not on this server's disk (deleted, never stored)."""

    code = "package_missing"
    status = 409


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


def _safe_relative(path: Any, root_bytes: int = 0) -> PurePosixPath:
    """A package path a filesystem can hold, inside the package, outside `.headwater/`."""
    if not isinstance(path, str) or not path:
        raise PackageError(f"a package path must be a non-empty string, not {path!r}")
    if "\x00" in path:
        raise PackageError(f"package path holds a NUL character: {path!r}")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError as ex:
        raise PackageError(f"package path is not valid UTF-8: {path!r}") from ex
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or not p.parts or str(p) != path.rstrip("/"):
        raise PackageError(f"unsafe path in package: {path[:300]!r}")
    for part in p.parts:
        if len(part.encode("utf-8")) > NAME_MAX:
            raise PackageError(
                f"a name in package path {path[:100]!r}... is longer than {NAME_MAX} bytes,"
                " more than a filesystem can hold"
            )
    if root_bytes + RUN_DIR_SLACK + len(encoded) >= PATH_MAX:
        raise PackageError(
            f"package path {path[:100]!r}... ({len(encoded)} bytes) is too long to store"
            f" on this server (at most {PATH_MAX - RUN_DIR_SLACK - root_bytes - 1} bytes)"
        )
    if HOME_DIR in p.parts:
        raise PackageError(
            f"package holds {path!r}: `{HOME_DIR}/` (Headwater's keys and database) is never"
            f" deployed; add `{HOME_DIR}/` to the workspace's .gitignore"
        )
    return p


def _check_link(rel: PurePosixPath, linkname: Any) -> str:
    """A symlink's target must stay inside the package (tarfile's `data` filter rules)."""
    if not isinstance(linkname, str) or not linkname or "\x00" in linkname:
        raise PackageError(f"{rel}: link target must be a non-empty string, not {linkname!r}")
    if len(linkname.encode("utf-8", "surrogatepass")) >= PATH_MAX - RUN_DIR_SLACK:
        raise PackageError(f"{rel}: link target is too long")
    if linkname.startswith("/"):
        raise PackageError(
            f"{rel} links to an absolute path ({linkname!r}); links must stay in the package"
        )
    target = posixpath.normpath(posixpath.join(str(rel.parent), linkname))
    if target == ".." or target.startswith("../"):
        raise PackageError(f"{rel} links outside the package ({linkname!r})")
    if target.split("/")[0] == HOME_DIR:
        raise PackageError(f"{rel} links into `{HOME_DIR}/` ({linkname!r})")
    return linkname


class _Counting(io.RawIOBase):
    """Counts the compressed bytes gzip reads, for the compression ratio."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.raw.read(len(b))
        n = len(data)
        b[:n] = data
        self.count += n
        if self.count > MAX_PACKAGE_BYTES:
            raise PackageTooLarge(
                f"package larger than {MAX_PACKAGE_BYTES // (1024 * 1024)} MiB compressed"
            )
        return n


def _gunzip_bounded(upload: BinaryIO, out: BinaryIO) -> None:
    """Gunzip `upload` into `out`, refusing a bomb before it is written out."""
    counting = _Counting(upload)
    expanded = 0
    try:
        with gzip.GzipFile(fileobj=io.BufferedReader(counting, CHUNK), mode="rb") as gz:
            while chunk := gz.read(CHUNK):
                expanded += len(chunk)
                if expanded > MAX_UNPACKED_BYTES:
                    raise PackageTooLarge(
                        f"package expands to more than {MAX_UNPACKED_BYTES // (1024 * 1024)} MiB"
                    )
                if expanded > RATIO_FLOOR and expanded > MAX_RATIO * max(counting.count, 1):
                    raise PackageTooLarge(
                        f"package expands more than {MAX_RATIO} times its compressed size"
                        f" ({counting.count} bytes to more than {expanded}): refused as a gzip bomb"
                    )
                out.write(chunk)
    except (OSError, EOFError, zlib.error) as ex:
        raise PackageError(f"not a gzipped tar archive: {ex}") from ex


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as ex:
            raise PackageError(f"not a tar archive: {ex}") from ex
        if member is None:
            return members
        members[member.name] = member
        if len(tar.members) > MAX_PACKAGE_FILES + 1:
            raise PackageTooLarge(f"package holds more than {MAX_PACKAGE_FILES} files")


def _read_manifest(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> list[Any]:
    member = members.get(DEFAULT_MANIFEST_FILE_NAME)
    if member is None:
        raise PackageError(f"no {DEFAULT_MANIFEST_FILE_NAME} at the package root")
    if not member.isreg():
        raise PackageError(f"{DEFAULT_MANIFEST_FILE_NAME} is not a file")
    if member.size > MAX_MANIFEST_BYTES:
        raise PackageTooLarge(
            f"{DEFAULT_MANIFEST_FILE_NAME} is larger than {MAX_MANIFEST_BYTES} bytes"
        )
    raw = tar.extractfile(member)
    assert raw is not None
    try:
        manifest = yaml.safe_load(raw.read())
        listed = list(manifest["files"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as ex:
        raise PackageError(f"unreadable {DEFAULT_MANIFEST_FILE_NAME}: {ex}") from ex
    if len(listed) > MAX_PACKAGE_FILES:
        raise PackageTooLarge(f"package lists more than {MAX_PACKAGE_FILES} files")
    if not all(isinstance(x, dict) for x in listed):
        raise PackageError(f"unreadable {DEFAULT_MANIFEST_FILE_NAME}: files must be mappings")
    return listed


def _check_listing(listed: list[Any], root: Path) -> list[tuple[PurePosixPath, dict[str, Any]]]:
    """Every listed path checked, sorted; no path twice, none under another file or a link."""
    root_bytes = len(os.fsencode(root.parent))
    items = []
    for item in listed:
        rel = _safe_relative(item.get("relative_path"), root_bytes)
        if not isinstance(item.get("sha3_256"), str):
            raise PackageError(f"{rel}: sha3_256 must be a string")
        if item.get("linkname") is not None:
            _check_link(rel, item["linkname"])
        items.append((rel, item))
    items.sort(key=lambda x: str(x[0]))
    paths = {str(rel) for rel, _ in items}
    if len(paths) != len(items):
        raise PackageError("package lists a path twice")
    for rel, _ in items:
        for parent in rel.parents:
            if str(parent) in paths:
                raise PackageError(
                    f"{rel} lies under {parent}, which is a file or a link: paths may not go"
                    " through a link"
                )
    return items


def _b64_sha3(h: Any) -> str:
    return base64.b64encode(h.digest()).decode("ascii")


def _extract(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    items: list[tuple[PurePosixPath, dict[str, Any]]],
    dest: Path,
    subdir: str,
) -> tuple[list[dict[str, Any]], int]:
    """Write the listed files under `dest`, verifying each hash; links last, then checked
    on disk: none may resolve outside `dest`."""
    files: list[dict[str, Any]] = []
    size = 0
    links: list[tuple[Path, str]] = []
    base = dest / subdir if subdir else dest
    for rel, item in items:
        member = members.get(f"{DEFAULT_DEPLOYMENT_FILES_FOLDER}/{rel}")
        if member is None:
            raise PackageError(f"{rel} is in the manifest but not in the package")
        target = base / rel
        linkname = item.get("linkname")
        if linkname is not None:
            if not member.issym():
                raise PackageError(f"{rel} has a linkname in the manifest but is not a link")
            digest = hashlib.sha3_256(linkname.encode("utf-8", "surrogatepass"))
            links.append((target, linkname))
        else:
            if not member.isreg():
                raise PackageError(
                    f"{rel} is not a regular file (a link needs its linkname in the manifest)"
                )
            digest = hashlib.sha3_256()
            fileobj = tar.extractfile(member)
            assert fileobj is not None
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := fileobj.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            os.chmod(target, (member.mode & 0o755) | 0o600)
            size += member.size
        if _b64_sha3(digest) != item["sha3_256"]:
            raise PackageError(f"{rel} does not match its sha3_256 in the manifest")
        files.append(
            {
                "relative_path": str(rel),
                "sha3_256": item["sha3_256"],
                "size_bytes": member.size if linkname is None else 0,
                "linkname": linkname,
            }
        )
    for target, linkname in links:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(linkname, target)
    inside = os.path.realpath(dest)
    for target, linkname in links:
        resolved = os.path.realpath(target)
        if os.path.commonpath([inside, resolved]) != inside:
            rel = target.relative_to(base)
            raise PackageError(f"{rel} links outside the package ({linkname!r})")
    return files, size


def unpack_package(upload: BinaryIO, root: Path, subdir: str = "") -> tuple[ReadPackage, Path]:
    """Check an uploaded package and unpack it once per content hash under `root`.

    Answers the package and its folder. Raises `PackageError` (`PackageTooLarge` past a
    bound) with nothing left on disk when the package is not one dlt would build.
    """
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".upload-") as work:
        tar_path = Path(work) / "package.tar"
        with open(tar_path, "wb") as out:
            _gunzip_bounded(upload, out)
        try:
            tar = tarfile.open(tar_path, mode="r:")
        except (tarfile.TarError, OSError) as ex:
            raise PackageError(f"not a tar archive: {ex}") from ex
        with tar:
            members = _members(tar)
            items = _check_listing(_read_manifest(tar, members), root)
            content_hash = compute_package_content_hash(
                {
                    "engine_version": 1,
                    "files": [
                        {"relative_path": str(rel), "sha3_256": item["sha3_256"]}
                        for rel, item in items
                    ],
                }  # type: ignore[typeddict-item]
            )
            staged = Path(work) / "files"
            staged.mkdir()
            try:
                files, size = _extract(tar, members, items, staged, subdir)
            except OSError as ex:
                raise PackageError(
                    f"package cannot be stored: {ex.strerror}: {ex.filename}"
                ) from ex
        tar_path.unlink()
        package = ReadPackage(content_hash, files, size)
        target = root / hash_dir_name(content_hash)
        if not target.exists():
            try:
                staged.rename(target)
            except OSError:
                pass  # another upload of the same hash won
    return package, target


def hash_dir_name(content_hash: str) -> str:
    return base64.urlsafe_b64decode(content_hash.replace("+", "-").replace("/", "_")).hex()[:32]


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


def write_package(folder: Path, files: list[dict[str, Any]], out: BinaryIO) -> None:
    """Pack an unpacked package again, as dlt lays one out, into `out` (a `.tar.gz`).

    `files` is the package's stored listing: its manifest says the hashes the package was
    accepted with, so a file changed on disk since fails `unpack_package` on the other end.
    The same files give the same bytes: sorted, with no times, owners or gzip file name.
    """
    listed = sorted(files, key=lambda f: str(f["relative_path"]))
    manifest_files: list[dict[str, Any]] = []
    for f in listed:
        item = {
            "relative_path": f["relative_path"],
            "size_in_bytes": f.get("size_bytes") or 0,
            "sha3_256": f["sha3_256"],
        }
        if f.get("linkname") is not None:
            item["linkname"] = f["linkname"]
        manifest_files.append(item)
    manifest = yaml.dump(
        {"engine_version": 1, "files": manifest_files},
        allow_unicode=True,
        default_flow_style=False,
        sort_keys=False,
    ).encode("utf-8")
    with (
        gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for f in listed:
            path = folder / f["relative_path"]
            info = tarfile.TarInfo(f"{DEFAULT_DEPLOYMENT_FILES_FOLDER}/{f['relative_path']}")
            if f.get("linkname") is not None:
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                tar.addfile(info)
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as data:
                st = os.fstat(data.fileno())
                info.size, info.mode = st.st_size, st.st_mode & 0o755
                tar.addfile(info, data)
        info = tarfile.TarInfo(DEFAULT_MANIFEST_FILE_NAME)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))


def build_packages(workspace: Path) -> tuple[bytes, str, bytes, str]:
    """Package a local workspace as `dlthub deploy` does: `(code, hash, configuration, hash)`,
    never with `.headwater/`."""
    from dlt._workspace._workspace_context import WorkspaceRunContext
    from dlt._workspace.deployment.file_selector import (
        ConfigurationFileSelector,
        WorkspaceFileSelector,
    )
    from dlt._workspace.profile import DEFAULT_PROFILE
    from dlt._workspace.run_context import default_name

    # a context of this folder, not dlt's active one: that is the first folder this process
    # met (a server packages on every reload, from threads; no chdir, no global switched)
    folder = str(workspace.resolve())
    context = WorkspaceRunContext(default_name(folder), folder, DEFAULT_PROFILE)
    builder = PackageBuilder(context=context)
    code, config = io.BytesIO(), io.BytesIO()
    # dlt's selector leaves out what .gitignore lists (or, without one, its defaults);
    # `.headwater/` holds the server's keys and database whatever .gitignore says
    selector = WorkspaceFileSelector(context, additional_excludes=[f"{HOME_DIR}/"])
    code_hash = builder.write_package_to_stream(selector, code)
    config_hash = builder.write_package_to_stream(ConfigurationFileSelector(context), config)
    return code.getvalue(), code_hash, config.getvalue(), config_hash
