"""Settings for the test process: a throw-away IFLOW2API_HOME, then the real settings."""

import os
import tempfile

os.environ["IFLOW2API_HOME"] = tempfile.mkdtemp(prefix="iflow2api-test-home-")
os.environ.setdefault("IMPORT_IFLOW_SETTINGS", "0")
# Commands and servers the tests start speak English whatever this machine's locale (LANG):
# tests read their output. tests/test_i18n.py asks for Chinese explicitly.
os.environ.setdefault("IFLOW2API_LANG", "en")

from iflow2api_site.settings import *  # noqa: F403
