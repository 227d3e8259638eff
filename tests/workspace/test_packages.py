"""Uploaded packages: what `unpack_package` refuses (and leaves nothing of), and what it keeps."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from headwater.workspace import packages as pk
from headwater.workspace.packages import (
    PackageError,
    PackageTooLarge,
    build_packages,
    unpack_package,
    write_package,
)
from tests.workspace.crafted import Zeros, craft, sha


def unpack(tmp_path: Path, data: bytes) -> tuple[pk.ReadPackage, Path]:
    return unpack_package(io.BytesIO(data), tmp_path / "home" / "packages" / "deployment")


def refused(tmp_path: Path, data: bytes, match: str, error: type[Exception] = PackageError) -> None:
    root = tmp_path / "home" / "packages" / "deployment"
    with pytest.raises(error, match=match):
        unpack_package(io.BytesIO(data), root)
    # nothing of a refused package stays behind, inside the root or beside it
    assert not root.exists() or list(root.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["packages"]


def test_a_good_package_is_unpacked_with_its_links(tmp_path: Path) -> None:
    data = craft(
        {"path": "__deployment__.py", "data": b"print('hi')\n"},
        {"path": "lib/util.py", "data": b"X = 1\n"},
        {"path": "util.py", "link": "lib/util.py"},
    )
    package, folder = unpack(tmp_path, data)
    assert (folder / "__deployment__.py").read_bytes() == b"print('hi')\n"
    assert os.readlink(folder / "util.py") == "lib/util.py"
    assert (folder / "util.py").read_bytes() == b"X = 1\n"
    assert [f["relative_path"] for f in package.files] == [
        "__deployment__.py",
        "lib/util.py",
        "util.py",
    ]
    assert package.size_bytes == len(b"print('hi')\n") + len(b"X = 1\n")
    # the same content again is the same folder
    again, folder2 = unpack(tmp_path, data)
    assert (again.content_hash, folder2) == (package.content_hash, folder)


def test_a_stored_package_packs_again_to_the_same_hash_and_the_same_bytes(tmp_path: Path) -> None:
    """What a worker downloads: the server packs a stored package again from its files."""
    data = craft(
        {"path": "__deployment__.py", "data": b"print('hi')\n"},
        {"path": "lib/util.py", "data": b"X = 1\n", "mode": 0o755},
        {"path": "util.py", "link": "lib/util.py"},
    )
    package, folder = unpack(tmp_path, data)
    first, second = io.BytesIO(), io.BytesIO()
    write_package(folder, package.files, first)
    write_package(folder, list(reversed(package.files)), second)
    assert first.getvalue() == second.getvalue()
    again, elsewhere = unpack_package(io.BytesIO(first.getvalue()), tmp_path / "worker")
    assert again.content_hash == package.content_hash
    assert again.files == package.files
    assert os.readlink(elsewhere / "util.py") == "lib/util.py"
    assert os.stat(elsewhere / "lib" / "util.py").st_mode & 0o111


def test_a_file_changed_after_it_was_stored_fails_the_packed_again_package(
    tmp_path: Path,
) -> None:
    data = craft({"path": "job.py", "data": b"print('hi')\n"})
    package, folder = unpack(tmp_path, data)
    os.chmod(folder / "job.py", 0o644)
    (folder / "job.py").write_bytes(b"print('changed')\n")
    packed = io.BytesIO()
    write_package(folder, package.files, packed)
    with pytest.raises(PackageError, match="job.py does not match its sha3_256"):
        unpack_package(io.BytesIO(packed.getvalue()), tmp_path / "worker")


# -- links that leave the package (issue 18, security 5) ----------------------------------------


def test_a_link_to_an_absolute_path_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, craft({"path": "lnk", "link": str(tmp_path)}), "absolute path")


def test_a_path_through_a_link_is_refused(tmp_path: Path) -> None:
    data = craft(
        {"path": "lnk", "link": "sub"},
        {"path": "lnk/file", "data": b"x"},
        {"path": "sub/a", "data": b"a"},
    )
    refused(tmp_path, data, "through a link")


def test_an_unlisted_link_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = craft(
        {"path": "lnk", "link": str(outside), "listed": False},
        {"path": "lnk/file", "data": b"stays inside"},
    )
    _package, folder = unpack(tmp_path, data)
    assert list(outside.iterdir()) == []
    assert not (folder / "lnk").is_symlink()
    assert (folder / "lnk" / "file").read_bytes() == b"stays inside"


def test_a_relative_link_out_of_the_package_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, craft({"path": "x/lnk", "link": "../../.headwater"}), "outside the package")


def test_chained_links_that_leave_the_package_are_refused(tmp_path: Path) -> None:
    # each target looks inside on its own; followed on disk, `l2` is the package's parent
    data = craft({"path": "d/l1", "link": ".."}, {"path": "l2", "link": "d/l1/.."})
    refused(tmp_path, data, "outside the package")


def test_a_link_listed_without_linkname_is_a_package_error(tmp_path: Path) -> None:
    data = craft({"path": "lnk", "link": "elsewhere", "linkname": False})
    refused(tmp_path, data, "not a regular file")


def test_a_listed_linkname_on_a_file_is_refused(tmp_path: Path) -> None:
    item = {"relative_path": "f", "size_in_bytes": 1, "sha3_256": sha(b"t"), "linkname": "t"}
    refused(tmp_path, craft({"path": "f", "data": b"x"}, manifest=[item]), "not a link")


# -- names a filesystem cannot hold (issue 18, security 3) --------------------------------------


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("a" * 5000 + ".py", "longer than 255 bytes"),
        ("/".join(["d" * 200] * 21) + "/f.py", "too long to store"),
        ("../escape.py", "unsafe path"),
        ("/etc/passwd", "unsafe path"),
        ("a/./b.py", "unsafe path"),
        ("é" * 128 + ".py", "longer than 255 bytes"),  # 256 bytes in UTF-8
    ],
)
def test_a_path_the_filesystem_cannot_hold_is_refused(
    tmp_path: Path, path: str, match: str
) -> None:
    refused(tmp_path, craft({"path": path, "data": b"x"}), match)


def test_a_nul_in_a_listed_path_is_refused(tmp_path: Path) -> None:
    item = {"relative_path": "a\x00b", "size_in_bytes": 1, "sha3_256": sha(b"x")}
    refused(tmp_path, craft({"path": "ab", "data": b"x"}, manifest=[item]), "NUL")


def test_a_path_listed_twice_or_missing_or_altered_is_refused(tmp_path: Path) -> None:
    item = {"relative_path": "a", "size_in_bytes": 1, "sha3_256": sha(b"x")}
    refused(tmp_path, craft({"path": "a", "data": b"x"}, manifest=[item, item]), "twice")
    refused(tmp_path, craft({"path": "b", "data": b"x"}, manifest=[item]), "not in the package")
    refused(tmp_path, craft({"path": "a", "data": b"y"}, manifest=[item]), "sha3_256")


# -- .headwater/ never travels (issue 18, security 2) -------------------------------------------


@pytest.mark.parametrize("path", [".headwater/admin.key", "sub/.headwater/secret.key"])
def test_a_package_with_headwater_home_is_refused(tmp_path: Path, path: str) -> None:
    refused(tmp_path, craft({"path": path, "data": b"dlt_sa_x"}), r"\.headwater/")


def test_build_packages_leaves_headwater_home_out(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".dlt").mkdir(parents=True)
    (ws / ".dlt" / ".workspace").write_text("")
    (ws / ".dlt" / "config.toml").write_text("")
    (ws / "__deployment__.py").write_text("import dlt\n")
    home = ws / ".headwater"
    home.mkdir()
    for name in ("admin.key", "secret.key", "headwater.db"):
        (home / name).write_text("secret")
    # no .gitignore, and one that lists something else: .headwater/ stays out either way
    for gitignore in (None, "*.duckdb\n!.headwater/admin.key\n"):
        if gitignore is not None:
            (ws / ".gitignore").write_text(gitignore)
        code, code_hash, _config, _ = build_packages(ws)
        with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as tar:
            names = tar.getnames()
        assert "files/__deployment__.py" in names
        assert not [n for n in names if ".headwater" in n], names
        package, _ = unpack(tmp_path / str(gitignore is None), code)
        assert package.content_hash == code_hash


def test_build_packages_packages_the_folder_it_is_given_each_time(tmp_path: Path) -> None:
    """Not dlt's active workspace (the first one the process met): a server packages its
    folder on every reload, and `headwater deploy -w` may name another folder than the cwd."""
    for name in ("first", "second"):
        ws = tmp_path / name
        (ws / ".dlt").mkdir(parents=True)
        (ws / f"{name}.py").write_text(f"NAME = {name!r}\n")
        (ws / ".dlt" / "config.toml").write_text(f'name = "{name}"\n')
        code, _hash, config, _ = build_packages(ws)
        with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as tar:
            assert [n for n in tar.getnames() if n.endswith(".py")] == [f"files/{name}.py"]
        with tarfile.open(fileobj=io.BytesIO(config), mode="r:gz") as tar:
            member = tar.extractfile("files/config.toml")
            assert member is not None and name.encode() in member.read()


# -- bounds: a gzip bomb, too many files --------------------------------------------------------


def bomb(expanded: int) -> bytes:
    """A tar.gz holding one file of `expanded` zero bytes, written as it streams."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w|") as tar:
            info = tarfile.TarInfo("files/zeros.bin")
            info.size = expanded
            tar.addfile(info, io.BufferedReader(Zeros(expanded)))
    return out.getvalue()


def test_a_gzip_bomb_is_refused_before_it_is_written_out(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(pk, "RATIO_FLOOR", 1024 * 1024)
    data = bomb(64 * 1024 * 1024)
    assert len(data) < 100_000
    refused(tmp_path, data, "gzip bomb", PackageTooLarge)


def test_a_package_past_the_expanded_size_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(pk, "MAX_UNPACKED_BYTES", 64 * 1024)
    data = craft({"path": "big.bin", "data": os.urandom(100 * 1024)})
    refused(tmp_path, data, "expands to more than", PackageTooLarge)


def test_a_package_with_too_many_files_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(pk, "MAX_PACKAGE_FILES", 10)
    data = craft(*({"path": f"f{i}", "data": b"x"} for i in range(20)))
    refused(tmp_path, data, "more than 10 files", PackageTooLarge)


@pytest.mark.parametrize(
    "data",
    [b"", b"not gzip", gzip.compress(b"not a tar" * 100, mtime=0)],
    ids=["empty", "not-gzip", "gzip-not-tar"],
)
def test_not_a_package_is_refused(tmp_path: Path, data: bytes) -> None:
    refused(tmp_path, data, "not a")
