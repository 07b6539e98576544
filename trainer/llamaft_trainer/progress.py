"""Training progress: stdout, TensorBoard, W&B/MLflow, `reports/<step>.json`, status.progress.

stdout: on a terminal, a progress bar (tqdm: step/total, loss, eval loss, learning rate, tokens/s,
elapsed and ETA); otherwise (pods, CI, redirected logs) one `[<step>] step=N epoch=... loss=...
eta=...` line per optimizer step, a format other tools parse (bench/startup.py, tests).
Only global rank 0 writes or reports anything.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from llamaft_trainer.status_reporter import StatusReporter
from llamaft_trainer.tracking import Status, Trackers


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Collects metrics per optimizer step; only rank 0 writes or reports anything."""

    def __init__(
        self,
        workdir: Path,
        *,
        name: str,
        total_steps: int,
        rank: int = 0,
        start_step: int = 0,
        trackers: Trackers | None = None,
    ) -> None:
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
        self.trackers = trackers if rank == 0 else None
        self._bar: Any = None
        self._last_eval: float | None = None
        if rank == 0 and self._tty:
            from tqdm import tqdm

            # A terminal that reports no width (some CI and container ttys) would get an empty
            # bar: follow the width only when there is one, else use $COLUMNS or 100.
            columns = shutil.get_terminal_size((100, 24)).columns
            self._bar = tqdm(
                total=total_steps,
                initial=start_step,
                desc=name,
                unit="step",
                file=sys.stdout,
                dynamic_ncols=os.get_terminal_size(sys.stdout.fileno()).columns > 0,
                ncols=columns,
                bar_format="{desc} {n_fmt}/{total_fmt} {bar} {percentage:3.0f}% "
                "[{elapsed}<{remaining}{postfix}]",
            )
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
        if self._bar is not None:
            self._update_bar(step, loss, lr, tps, eval_loss)
        else:
            line = " ".join(f"{k}={v}" for k, v in entry.items())
            print(f"[{self.name}] {line} eta={_duration(eta)}", flush=True)
        if self._writer is not None:
            self._writer.add_scalar("train/loss", loss, step)
            self._writer.add_scalar("train/learning_rate", lr, step)
            self._writer.add_scalar("train/tokens_per_second", tps, step)
            if eval_loss is not None:
                self._writer.add_scalar("eval/loss", eval_loss, step)
        if self.trackers is not None:
            metrics = {
                "train/loss": loss,
                "train/learning_rate": lr,
                "train/tokens_per_second": tps,
                "train/epoch": epoch,
                "train/tokens": float(self.tokens),
            }
            if eval_loss is not None:
                metrics["eval/loss"] = eval_loss
            self.trackers.log(metrics, step)
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
        if self.trackers is not None:
            self.trackers.summary(final_metrics(report), int(report.get("step") or 0))
        if self.rank == 0:
            reports = self.workdir / "reports"
            reports.mkdir(parents=True, exist_ok=True)
            (reports / f"{self.name}.json").write_text(json.dumps(report, indent=2))
            if self._writer is not None:
                self._writer.flush()
        return report

    def _update_bar(
        self, step: int, loss: float, lr: float, tps: float, eval_loss: float | None
    ) -> None:
        if eval_loss is not None:
            self._last_eval = eval_loss
        postfix = f"loss={loss:.4f}"
        if self._last_eval is not None:
            postfix += f" eval_loss={self._last_eval:.4f}"
        postfix += f" lr={lr:.2e} tok/s={tps:,.0f}"
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self, status: Status = "finished") -> None:
        """End the progress bar and the tracker runs (once; later calls do nothing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.trackers is not None:
            self.trackers.finish(status)
            self.trackers = None


def final_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The end-of-run numbers of a train report, as `final/*` tracker metrics."""
    keys = {
        "loss": "final/loss",
        "firstLoss": "final/first_loss",
        "evalLoss": "final/eval_loss",
        "step": "final/steps",
        "tokens": "final/tokens",
        "durationSeconds": "final/duration_seconds",
        "stoppedEarly": "final/stopped_early",
    }
    return {
        name: float(report[key])
        for key, name in keys.items()
        if isinstance(report.get(key), int | float)
    }
