"""Step results travel back to the operator through the container's termination message.

Kubernetes keeps at most 4096 bytes of it, so results are compact JSON; the operator never mounts
the work volume. Locally (no `/dev/termination-log`) the message is only returned.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

TERMINATION_LOG_ENV = "LLAMAFT_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
MAX_BYTES = 4096


def termination_log_path() -> Path | None:
    path = Path(os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG))
    explicit = TERMINATION_LOG_ENV in os.environ
    return path if path.parent.exists() and (path.exists() or explicit) else None


def compact(result: dict[str, Any]) -> str:
    """Serialise `result`, dropping the largest optional entries until it fits in 4 KiB."""
    payload = dict(result)
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)
    while len(text.encode()) > MAX_BYTES and payload:
        largest = max(payload, key=lambda k: len(json.dumps(payload[k], default=str)))
        payload.pop(largest)
        payload["truncated"] = True
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)
    return text


def write_result(result: dict[str, Any]) -> str:
    """Write `result` as the termination message (when running in a pod) and return the text."""
    text = compact(result)
    path = termination_log_path()
    if path is not None:
        # A read-only or vanished termination log must not fail the step.
        with contextlib.suppress(OSError):
            path.write_text(text)
    return text
