"""The run's beacon DSN and its secret."""

from __future__ import annotations

import base64

import requests

from headwater.core import beacon

KEY = beacon.derive_key(b"server secret")
RUN = "0b6e1c8e-2f55-4d0e-9a3c-4c8e0d1f2a3b"


def test_the_dsn_carries_the_run_s_secret_as_a_password_and_requests_sends_it() -> None:
    dsn = beacon.dsn("http://127.0.0.1:8765/", "ws-1", RUN, KEY)
    secret = beacon.run_secret(KEY, RUN)
    assert dsn == (
        f"http://run:{secret}@127.0.0.1:8765/telemetry/v1/workspaces/ws-1/job-runs/{RUN}/-beacon"
    )
    # what dlt's `send_payload` does with it: the secret leaves the URL for a Basic header
    prepared = requests.Request("PUT", f"{dsn}/trace", data="{}").prepare()
    assert prepared.path_url == f"/telemetry/v1/workspaces/ws-1/job-runs/{RUN}/-beacon/trace"
    header = prepared.headers["Authorization"]
    assert isinstance(header, str)
    assert beacon.secret_from_header(header) == secret
    assert beacon.check(KEY, RUN, secret)


def test_a_secret_admits_its_own_run_only() -> None:
    secret = beacon.run_secret(KEY, RUN)
    assert not beacon.check(KEY, RUN.replace("0b", "0c", 1), secret)
    assert not beacon.check(beacon.derive_key(b"another server"), RUN, secret)
    assert beacon.run_secret(KEY, RUN) != beacon.run_secret(b"server secret", RUN)


def test_authorization_headers() -> None:
    basic = "Basic " + base64.b64encode(b"run:s3cret").decode()
    assert beacon.secret_from_header(basic) == "s3cret"
    assert beacon.secret_from_header("Bearer s3cret") == "s3cret"
    for bad in ("", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"run").decode(), "Token x"):
        assert beacon.secret_from_header(bad) is None
