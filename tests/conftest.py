"""Shared test setup: tests import `tests.*` helpers from the repository root."""

import os
import tempfile

# `headwater up` notes the server it started in the user's state folder (for commands run
# outside any workspace): test servers note theirs in a folder of the test session's own
os.environ.setdefault("HEADWATER_STATE_DIR", tempfile.mkdtemp(prefix="headwater-state-"))
