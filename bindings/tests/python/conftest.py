"""Fixtures for the Python binding tests: the generated `scr_sync` package
(from SCR_PY_BINDINGS) and a real server (the binary in SCR_SERVER_BIN)."""

import os
import sys

import pytest

sys.path.insert(0, os.environ["SCR_PY_BINDINGS"])
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from scr_site import BORN, NURSE, PARAMEDIC, standard_site  # noqa: E402,F401


@pytest.fixture(scope="session")
def site():
    s = standard_site(os.environ["SCR_SERVER_BIN"])
    yield s
    s.stop()
