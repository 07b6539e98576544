"""Time to first step: imports, `llamaft run` start to the first optimizer step, and where it goes.

    .venv/bin/python -m bench.startup                      # SmolLM2, the quickstart's shape
    .venv/bin/python -m bench.startup --model tiny-llama

Three measurements, each in fresh processes (the OS file cache is warm: run it twice, report
the second):
1. Import time of the modules a command needs (`python -c "import X"`, minus the interpreter's
   own start-up), and `llamaft --help`.
2. `llamaft run MANIFEST` on a manifest with a local dataset (no pilot, no golden set, no publish):
   wall time from the process start to the first `[train] step=1` line on stdout, plus the time
   of each line before it, so the gap is attributed (validate, plan, model load, first step).
3. The same set-up in one process with a stopwatch per stage: plan, tokenizer, data pipeline,
   model load, adapters, first optimizer step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import common

MODULES = (
    "llamaft_operator.planner",
    "llamaft_trainer.cli",
    "torch",
    "transformers",
    "peft",
    "llamaft_trainer.recipe",
    "transformers.models.llama.modeling_llama",
)


def import_seconds(module: str, repeats: int = 2) -> float:
    """Best of `repeats` fresh interpreters: seconds to import `module`."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    best = float("inf")
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=common.ROOT,
        )
        best = min(best, float(out.stdout.strip().splitlines()[-1]))
    return round(best, 2)


def cli_help_seconds() -> float:
    llamaft = Path(sys.executable).parent / "llamaft"
    started = time.monotonic()
    subprocess.run([str(llamaft), "--help"], capture_output=True, check=True)
    return round(time.monotonic() - started, 2)


MANIFEST = """apiVersion: llamaft.io/v1alpha1
kind: LlamaFineTune
metadata: {{name: startup}}
spec:
  model: {{name: "{model}"}}
  dataset:
    source: {{local: {{path: train.jsonl}}}}
    format: prompt-response
    validationSplit: 0.0
  method: lora
  training:
    maxSteps: 2
    maxSeqLength: 512
    perDeviceBatchSize: 4
    gradientAccumulationSteps: 1
"""


def run_to_first_step(
    model: str, rows: int, work: Path, timeout: float = 600, max_words: int | None = None
) -> dict[str, Any]:
    """Start `llamaft run`, timestamp each stdout line, stop at the first optimizer step.

    `max_words`: keep only rows of at most this many words (the tiny Llama's tokenizer spends
    several tokens per word, so the long tail would exceed maxSeqLength and fail validation).
    """
    from bench import data, plans

    sample = data.rows(rows if max_words is None else rows * 8)
    if max_words is not None:
        sample = [r for r in sample if len(f"{r['prompt']} {r['response']}".split()) <= max_words]
    data.write_jsonl(work / "train.jsonl", sample[:rows])
    manifest = work / "startup.yaml"
    manifest.write_text(MANIFEST.format(model=plans.MODELS[model]))
    llamaft = Path(sys.executable).parent / "llamaft"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "dumb", "COLUMNS": "200"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(llamaft), "run", str(manifest), "--workdir", str(work / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[tuple[float, str]] = []
    first_step: float | None = None
    assert proc.stdout is not None
    for line in proc.stdout:
        at = round(time.monotonic() - started, 2)
        text = line.rstrip()
        if text and "Warning" not in text and "warn(" not in text:
            lines.append((at, text[:160]))
        if "step=1 " in text and "[train]" in text:
            first_step = at
            break
        if at > timeout:
            break
    proc.kill()
    proc.wait()
    return {"firstStepSeconds": first_step, "timeline": lines[-25:]}


def stage_breakdown(model: str, rows: int, work: Path) -> dict[str, float]:
    """Set-up stages of one training run, in this process (imports counted first)."""
    stages: dict[str, float] = {}
    t = time.monotonic()

    def lap(name: str) -> None:
        nonlocal t
        now = time.monotonic()
        stages[name] = round(now - t, 2)
        t = now

    import torch
    import transformers  # noqa: F401

    lap("import torch + transformers")
    from bench import data, plans
    from llamaft_trainer import data as ft_data
    from llamaft_trainer import models
    from llamaft_trainer.recipe import FineTuneRecipe

    data_file = work / "train.jsonl"
    data.write_jsonl(data_file, data.rows(rows))
    plan = plans.plan_for(model, data_file)
    lap("plan (make_plan)")
    tokenizer = models.load_tokenizer(plan)
    lap("tokenizer")
    ft_data.build_splits(plan, tokenizer)
    lap("data: validate, render, tokenize")
    base = models.load_base_model(plan, device="cpu", for_training=True)
    lap("base model load")
    models.add_adapters(plan, base)
    lap("LoRA adapters")
    recipe = FineTuneRecipe(plan.model_copy(), work / "run", max_steps=1)
    recipe.setup()
    lap("recipe.setup() (all of the above again, in the recipe)")
    recipe.train()
    lap("first optimizer step + checkpoint + adapter save")
    recipe.cleanup()
    del torch
    return stages


# --- kubectl apply -> first optimizer step on the e2e cluster ------------------------------------

E2E_NAMESPACE = "startup"


def e2e_first_step(work: Path, timeout: float = 600) -> dict[str, Any]:
    """Time from `kubectl apply` to the first optimizer step on the e2e test cluster.

    The cluster of tests/e2e (real control plane, pod runner that runs the trainer as local
    processes), the operator as a subprocess, the e2e's small run (builtin tiny Llama, 48 rows of
    the quickstart data on a PVC, no pilot, golden set or publish). Each milestone is this
    process's clock when its watch event arrived; "first step" is the trainer's first progress
    patch, which it sends at step 1.
    """
    import threading

    import yaml

    from tests.cluster.session import Cluster
    from tests.e2e.conftest import CRD, QUICKSTART, Operator, finetune, operator_env

    cluster = Cluster(work / "cluster").start()
    operator: Operator | None = None
    stop = threading.Event()
    try:
        admin = cluster.admin()
        env = cluster.env()
        subprocess.run(
            ["kubectl", "apply", "--server-side", "-f", str(CRD)],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "kubectl",
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/llamafinetunes.llamaft.io",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        admin.post(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": E2E_NAMESPACE}},
        )
        rest = admin.with_namespace(E2E_NAMESPACE)
        rest.post(
            f"/api/v1/namespaces/{E2E_NAMESPACE}/persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "datasets"},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        assert cluster.runner is not None
        deadline = time.monotonic() + 60
        while (claim := cluster.runner.claim_dir(E2E_NAMESPACE, "datasets")) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("PVC datasets not bound")
            time.sleep(0.2)
        rows = (QUICKSTART / "train.jsonl").read_text().splitlines()[:48]
        (claim / "train.jsonl").write_text("\n".join(rows) + "\n")
        operator = Operator(E2E_NAMESPACE, operator_env(cluster.kubeconfig), work / "operator.log")
        operator.start()
        time.sleep(5)  # the operator's imports and first list; not part of apply -> first step
        seen: dict[str, float] = {}
        lock = threading.Lock()

        def mark(what: str, at: float) -> None:
            with lock:
                seen.setdefault(what, at)

        def on_ft(obj: dict[str, Any], at: float) -> None:
            if ((obj.get("status") or {}).get("progress") or {}).get("step"):
                mark("first optimizer step (status.progress)", at)

        def on_job(obj: dict[str, Any], at: float) -> None:
            step = obj["metadata"].get("labels", {}).get("llamaft.io/step", "?")
            mark(f"{step} Job created", at)
            if (obj.get("status") or {}).get("succeeded"):
                mark(f"{step} Job succeeded", at)

        def on_pod(obj: dict[str, Any], at: float) -> None:
            step = obj["metadata"].get("labels", {}).get("llamaft.io/step", "?")
            phase = (obj.get("status") or {}).get("phase")
            mark(f"{step} pod created", at)
            if phase in ("Running", "Succeeded"):
                mark(f"{step} pod running", at)
            if phase == "Succeeded":
                mark(f"{step} pod succeeded", at)

        base = f"namespaces/{E2E_NAMESPACE}"
        for path, fn in (
            (f"/apis/llamaft.io/v1alpha1/{base}/llamafinetunes", on_ft),
            (f"/apis/batch/v1/{base}/jobs", on_job),
            (f"/api/v1/{base}/pods", on_pod),
        ):
            _Watch(rest, path, fn, stop).start()
        manifest = finetune(
            "first-step",
            dataset={"validationSplit": 0.0},
            training={"maxSteps": 2, "saveSteps": 2},
        )
        file = work / "first-step.yaml"
        file.write_text(yaml.safe_dump(manifest))
        applied = time.monotonic()
        out = subprocess.run(
            ["kubectl", "apply", "-n", E2E_NAMESPACE, "-f", str(file)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"kubectl apply: {out.stderr}")
        key = "first optimizer step (status.progress)"
        while key not in seen and time.monotonic() - applied < timeout:
            time.sleep(0.1)
        timeline = {k: round(v - applied, 2) for k, v in sorted(seen.items(), key=lambda x: x[1])}
        return {
            "applyToFirstStepSeconds": timeline.get(key),
            "timeline": timeline,
            "operatorGaps": operator_gaps(timeline),
        }
    finally:
        stop.set()
        if operator is not None:
            operator.stop()
        cluster.stop()


def operator_gaps(timeline: dict[str, float]) -> dict[str, float | None]:
    """The time the operator (not the pods) is on the critical path: apply -> validate Job, and
    validate pod done -> train Job."""

    def gap(a: str | None, b: str) -> float | None:
        if b not in timeline or (a is not None and a not in timeline):
            return None
        return round(timeline[b] - (timeline[a] if a else 0.0), 2)

    return {
        "apply -> validate Job": gap(None, "validate Job created"),
        "validate pod succeeded -> train Job": gap("validate pod succeeded", "train Job created"),
    }


class _Watch(threading.Thread):
    """Calls fn(object, monotonic time) for every watch event under `path`."""

    def __init__(self, rest: Any, path: str, fn: Any, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.rest, self.path, self.fn, self.stop = rest, path, fn, stop

    def run(self) -> None:
        version = self.rest.get(self.path)["metadata"]["resourceVersion"]
        while not self.stop.is_set():
            try:
                for kind, obj in self.rest.watch(self.path, version, timeout_s=5):
                    version = obj["metadata"].get("resourceVersion", version)
                    if kind != "BOOKMARK":
                        self.fn(obj, time.monotonic())
            except Exception:
                if self.stop.is_set():
                    return
                version = self.rest.get(self.path)["metadata"]["resourceVersion"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child-stages", nargs=2, metavar=("MODEL", "WORKDIR"))
    parser.add_argument(
        "--e2e", action="store_true", help="also kubectl apply -> first step on the e2e cluster"
    )
    parser.add_argument("--skip-local", action="store_true", help="only the e2e measurement")
    args = parser.parse_args()
    if args.child_stages:
        model, work = args.child_stages
        common.emit(stage_breakdown(model, args.rows, Path(work)))
        return
    report: dict[str, Any] = {"machine": common.machine(), "versions": common.versions()}
    if args.e2e:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:  # pods mount their own /tmp
            report["e2e"] = e2e_first_step(Path(tmp))
    if args.skip_local:
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
    baseline = import_seconds("sys")
    report["importSeconds"] = {m: round(import_seconds(m) - baseline, 2) for m in MODULES}
    report["llamaftHelpSeconds"] = cli_help_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        report["llamaftRun"] = run_to_first_step(args.model, args.rows, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        stages = common.run_child(
            "bench.startup", ["--rows", str(args.rows), "--child-stages", args.model, tmp]
        )
        report["stages"] = stages
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
