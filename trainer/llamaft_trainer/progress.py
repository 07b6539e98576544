"""Training progress: stdout, TensorBoard, `reports/<step>.json` and the CR's status.progress."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from llamaft_trainer.status_reporter import StatusReporter


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Collects metrics per optimizer step; only rank 0 writes or reports anything."""

    def __init__(self, workdir: Path, *, name: str, total_steps: int, rank: int = 0) -> None:
        self.workdir = workdir
        self.name = name
        self.total_steps = total_steps
        self.rank = rank
        self.history: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.start_time = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.tokens = 0
        self.reporter = StatusReporter()
        self._writer: Any = None
        self._tty = sys.stdout.isatty()
        if rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(workdir / "tensorboard" / name))
            except ImportError:  # tensorboard is optional
                self._writer = None

    def log_step(
        self,
        step: int,
        epoch: float,
        loss: float,
        lr: float,
        tokens: int,
        eval_loss: float | None = None,
    ) -> None:
        self.tokens += tokens
        elapsed = time.monotonic() - self.started
        tps = self.tokens / elapsed if elapsed > 0 else 0.0
        done = step / self.total_steps if self.total_steps else 0.0
        eta = elapsed / max(done, 1e-9) * (1 - done) if done else 0.0
        entry = {
            "step": step,
            "epoch": round(epoch, 3),
            "loss": round(loss, 5),
            "learningRate": lr,
            "tokens": self.tokens,
            "tokensPerSecond": round(tps, 1),
            "elapsedSeconds": round(elapsed, 1),
        }
        if eval_loss is not None:
            entry["evalLoss"] = round(eval_loss, 5)
        self.history.append(entry)
        if self.rank != 0:
            return
        line = " ".join(f"{k}={v}" for k, v in entry.items())
        print(f"[{self.name}] {line} eta={_duration(eta)}", flush=True)
        if self._writer is not None:
            self._writer.add_scalar("train/loss", loss, step)
            self._writer.add_scalar("train/learning_rate", lr, step)
            self._writer.add_scalar("train/tokens_per_second", tps, step)
            if eval_loss is not None:
                self._writer.add_scalar("eval/loss", eval_loss, step)
        progress = {
            "step": step,
            "totalSteps": self.total_steps,
            "epoch": round(epoch, 3),
            "loss": round(loss, 4),
            "learningRate": lr,
            "tokensPerSecond": round(tps, 1),
            "eta": _duration(eta),
            "percent": f"{100 * done:.0f}%",
            "updatedAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        if eval_loss is not None:
            progress["evalLoss"] = round(eval_loss, 4)
        self.reporter.report(progress, force=step == self.total_steps)

    def write_report(self, extra: dict[str, Any]) -> dict[str, Any]:
        report = {
            "name": self.name,
            "startTime": self.start_time,
            "endTime": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "durationSeconds": round(time.monotonic() - self.started, 1),
            "tokens": self.tokens,
            "history": self.history,
            **extra,
        }
        if self.rank == 0:
            reports = self.workdir / "reports"
            reports.mkdir(parents=True, exist_ok=True)
            (reports / f"{self.name}.json").write_text(json.dumps(report, indent=2))
            if self._writer is not None:
                self._writer.flush()
        return report
