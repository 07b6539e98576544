"""A Hub-compatible test server (see `server.py`) and its pytest fixture (`fixtures.py`)."""
