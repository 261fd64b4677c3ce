"""rcp's tests (trial)."""

import os
import tempfile

# The rcp processes the tests start keep their status sockets here, not in
# the machine's /run/rcp (rcp.settings.runDirectory).
os.environ.setdefault("RCP_RUN_DIRECTORY", tempfile.mkdtemp(prefix="rcp-test-run-"))
