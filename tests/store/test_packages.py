"""Package rows: an upload token is good once, and only for its own unnumbered package."""

from __future__ import annotations

from headwater.store.packages import PackageStore
from headwater.store.store import Store
from tests.store.test_store import MODULE, job_spec, manifest_of


def test_an_upload_token_is_good_for_its_package_until_it_is_used(store: Store, ws: str) -> None:  # noqa: F811
    packages = PackageStore(store.engine)
    row, token = packages.issue(ws, "deployment", "key-1")
    other, other_token = packages.issue(ws, "deployment", "key-1")
    assert packages.awaiting(row["id"], token)["id"] == row["id"]  # type: ignore[index]
    assert packages.awaiting(row["id"], other_token) is None
    assert packages.awaiting(row["id"], "hw_upload_bogus") is None
    done = packages.complete(row["id"], token, content_hash="h", files=[], size_bytes=0)
    assert done is not None and done["version"] == 1
    assert packages.awaiting(row["id"], token) is None
    assert packages.complete(row["id"], token, content_hash="h", files=[], size_bytes=0) is None
    # an issued package that never completes takes no version: the next one is 2
    assert packages.latest(ws, "deployment")["id"] == row["id"]  # type: ignore[index]
    assert packages.awaiting(other["id"], other_token) is not None


def test_deployed_lists_remote_deploys_newest_first(store: Store, ws: str) -> None:  # noqa: F811
    packages = PackageStore(store.engine)
    spec = job_spec("jobs.m.a")
    manifest, digest = manifest_of(spec)
    store.deploy(ws, manifest, digest, [], [spec], MODULE)  # from the workspace folder
    assert packages.deployed(ws) == []
    store.deploy(ws, manifest, digest, [], [spec], MODULE, code_package_id="c1")
    store.deploy(
        ws, manifest, digest, [], [spec], MODULE, code_package_id="c2", config_package_id="k1"
    )
    assert packages.deployed(ws) == [(3, "c2", "k1"), (2, "c1", None)]
