"""Crash-safe checkpoints: `checkpoints/step-N/`, trusted only once complete.

A checkpoint is written into `checkpoints/.partial-step-N/`, every file fsynced, the directory
renamed to `step-N/` and only then is `COMPLETE` written (and fsynced with its directory). A pod
killed at any moment leaves either no `step-N/` or one without `COMPLETE`; `latest_complete`
ignores both, so resume never trusts a half-written checkpoint. The last K complete checkpoints are
kept.

Torch-free except for `save_torch`/`load_torch`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

MARKER = "COMPLETE"
STATE = "trainer_state.json"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoints_dir(workdir: Path) -> Path:
    return workdir / "checkpoints"


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def begin(workdir: Path, step: int) -> Path:
    """A fresh partial directory to write checkpoint `step` into."""
    partial = checkpoints_dir(workdir) / f".partial-step-{step}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def commit(workdir: Path, partial: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Make `partial` the complete checkpoint `step`; prune to the newest `keep`."""
    (partial / STATE).write_text(json.dumps({**state, "step": step}, indent=2))
    _fsync_tree(partial)
    final = checkpoints_dir(workdir) / f"step-{step}"
    if final.exists():
        shutil.rmtree(final)  # an incomplete leftover of the same step
    partial.rename(final)
    marker = final / MARKER
    marker.write_text(str(step))
    _fsync_tree(final)
    for old in complete_steps(workdir)[:-keep]:
        shutil.rmtree(checkpoints_dir(workdir) / f"step-{old}", ignore_errors=True)
    return final


def complete_steps(workdir: Path) -> list[int]:
    root = checkpoints_dir(workdir)
    if not root.is_dir():
        return []
    steps = []
    for child in root.iterdir():
        m = _STEP.match(child.name)
        if m and (child / MARKER).is_file() and (child / STATE).is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest_complete(workdir: Path) -> Path | None:
    steps = complete_steps(workdir)
    return checkpoints_dir(workdir) / f"step-{steps[-1]}" if steps else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((checkpoint / STATE).read_text())
    return data
