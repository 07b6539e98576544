"""Pytest plugin: `hub_server`, a fresh Hub-compatible test server per test.

Registered by the root conftest (`pytest_plugins`); elsewhere use `-p tests.hub.fixtures`.
The server knows two tokens: `HUB_WRITE_TOKEN` (write scope) and `HUB_READ_TOKEN` (read scope).
They are distinctive strings so tests can grep outputs for leaks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hub.server import HubServer

HUB_WRITE_TOKEN = "hf_llamaftTESTwriteTOKEN0123456789abcdef"
HUB_READ_TOKEN = "hf_llamaftTESTreadTOKEN0123456789abcdef"


@pytest.fixture
def hub_server() -> Iterator[HubServer]:
    """A running test Hub on 127.0.0.1:<random port>; `hub_server.url` is its endpoint."""
    server = HubServer({HUB_WRITE_TOKEN: "write", HUB_READ_TOKEN: "read"})
    with server:
        yield server
