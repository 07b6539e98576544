"""Where base models live on the shared model-cache volume.

One directory per (model, revision): `<root>/<owner>--<name>@<revision>/`. A copy counts only once
its completion marker exists, so a fetch killed half-way is never loaded; the marker records the
commit the revision resolved to. Torch-free: the fetch step runs in a CPU pod.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

MODEL_CACHE_ENV = "LLAMAFT_MODEL_CACHE"
DEFAULT_MODEL_CACHE = Path.home() / ".cache" / "llamaft" / "models"
COMPLETE_MARKER = ".llamaft-complete.json"


def cache_root() -> Path:
    return Path(os.environ.get(MODEL_CACHE_ENV) or DEFAULT_MODEL_CACHE)


def cache_dir(name: str, revision: str, root: Path | None = None) -> Path:
    """The cache directory of `name` at `revision` (no path separators leak into the name)."""
    safe = re.sub(r"[^A-Za-z0-9._@-]", "-", f"{name.replace('/', '--')}@{revision}")
    return (root or cache_root()) / safe


def complete_marker(directory: Path) -> dict[str, Any] | None:
    """The completion record of a cached copy, or None when the copy is absent or partial."""
    marker = directory / COMPLETE_MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def mark_complete(directory: Path, record: dict[str, Any]) -> None:
    tmp = directory / (COMPLETE_MARKER + ".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(directory / COMPLETE_MARKER)


def partial_dir(target: Path) -> Path:
    """A private directory beside `target` to build a copy in (unique per process)."""
    partial = target.with_name(f"{target.name}.partial-{os.uname().nodename}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def install(partial: Path, target: Path, record: dict[str, Any]) -> None:
    """Make the fully written copy in `partial` visible at `target` in one rename.

    The marker goes in before the rename, so `target` never exists without it. Several processes
    may build the same copy at once (the ranks of a multi-node run whose pods share a cache); the
    first rename wins and the others discard theirs, so no reader sees a copy being written or
    replaced under it.
    """
    mark_complete(partial, record)
    if target.exists() and complete_marker(target) is None:
        # Unmarked: left by a writer that was killed before it finished (older layout).
        shutil.rmtree(target, ignore_errors=True)
    try:
        partial.rename(target)
    except OSError:
        if complete_marker(target) is None:
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another process installed it first
