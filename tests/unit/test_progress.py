"""Progress on stdout: a tqdm bar on a terminal (run here through a real pseudo-terminal), and the
plain `[train] step=N ...` lines, unchanged, everywhere else (pods, CI, pipes)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

# Three optimizer steps through the real Progress class, the last one with an eval loss.
SCRIPT = """
import sys
from pathlib import Path
from llamaft_trainer.progress import Progress

progress = Progress(Path(sys.argv[1]), name="train", total_steps=3)
progress.log_step(1, 0.33, 2.5, 1e-3, 1000)
progress.log_step(2, 0.67, 2.0, 9e-4, 1000)
progress.log_step(3, 1.0, 1.5, 8e-4, 1000, eval_loss=1.75)
progress.write_report({"step": 3, "loss": 1.5})
progress.close()
print("done")
"""

PLAIN_LINE = re.compile(
    r"^\[train\] step=(\d+) epoch=[0-9.]+ loss=[0-9.]+ learningRate=[0-9.e-]+ tokens=\d+ "
    r"tokensPerSecond=[0-9.]+ elapsedSeconds=[0-9.]+( evalLoss=[0-9.]+)? eta=\d+m\d\ds$"
)


def run_in_pty(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600, columns: int = 120
) -> str:
    """Run `args` with stdout and stderr on a pseudo-terminal `columns` wide (0: a terminal that
    reports no size); return everything it wrote."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, cwd=cwd, env=env
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("columns", [120, 0])
def test_a_terminal_gets_a_progress_bar(tmp_path: Path, columns: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    out = run_in_pty([sys.executable, "-c", SCRIPT, str(tmp_path)], tmp_path, env, columns=columns)
    assert out.rstrip().endswith("done"), out
    assert "3/3" in out and "100%" in out
    assert "loss=1.5000" in out and "eval_loss=1.7500" in out
    assert "lr=8.00e-04" in out and "tok/s=" in out
    assert "█" in out  # the bar itself
    assert "[train] step=" not in out  # no plain lines on a terminal


def test_without_a_terminal_the_plain_lines_are_unchanged(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[-1] == "done"
    steps = [PLAIN_LINE.match(line) for line in lines[:-1]]
    assert all(steps), lines
    assert [int(m[1]) for m in steps if m] == [1, 2, 3]
    assert lines[0].startswith("[train] step=1 epoch=0.33 loss=2.5 learningRate=0.001 tokens=1000 ")
    assert " evalLoss=1.75 eta=0m00s" in lines[2]
    assert "\r" not in result.stdout and "█" not in result.stdout + result.stderr
