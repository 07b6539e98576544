"""Test-suite plugins: the real control plane + pod runner (tests/cluster) and the Hub test server
(tests/hub). A test that needs a missing fixture fails loudly with "fixture not found"."""

from __future__ import annotations

import importlib.util

pytest_plugins = [
    name
    for name in ("tests.cluster.fixtures", "tests.hub.fixtures")
    if importlib.util.find_spec(name) is not None
]
