"""What every benchmark shares: the machine and versions, peak-memory probes, child processes.

Each configuration of a benchmark runs in its own child process (`run_child`), so its peak
memory is its own, while the parent runs all of them in one invocation on the same model and
data and computes the ratios from that one run.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "
MIB = 1024**2


def machine() -> dict[str, Any]:
    """CPU model, core count and RAM of this machine; the GPU when there is one."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ramGiB"] = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpuMemoryGiB"] = round(torch.cuda.get_device_properties(0).total_memory / 1024**3)
    except ImportError:
        pass
    return info


def versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in names or ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def rss_mib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / MIB


class PeakRss:
    """Samples this process's RSS every `interval` seconds while in the `with` block.

    On CPU the training peak is RSS: weights, activations, optimizer state and allocator slack all
    live there. `peak_mib` is the highest sample; `growth_mib` the peak minus RSS on entry.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.start_mib = 0.0
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, rss_mib())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.start_mib = self.peak_mib = rss_mib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, rss_mib())

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.start_mib


def max_rss_mib() -> float:
    """The process's lifetime peak RSS (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cuda_peak_mib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return float(torch.cuda.max_memory_allocated()) / MIB


def emit(result: dict[str, Any]) -> None:
    """A child's last act: print its result on one line for the parent."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(module: str, args: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run `python -m module *args` in a fresh process and return the dict it `emit`ted."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"},
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{module} {' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["processSeconds"] = round(time.monotonic() - started, 1)
    return result


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    value = fn()
    return value, time.monotonic() - started


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
