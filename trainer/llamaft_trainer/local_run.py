"""`llamaft run FILE.yaml`: the whole pipeline for one manifest on this machine, no Kubernetes.

validate data -> (pilot) -> train -> evaluate (+ gates) -> package -> publish, the same steps and
code the operator's Jobs run, in one process, on CPU or one GPU. Paths in `local:` sources and in
`publish.dir` are relative to the manifest's folder. The run plan is written to
`<workdir>/plan.json` first, so any step can be re-run by hand with `--plan`. Training resumes from
the newest complete checkpoint, so an interrupted `llamaft run` continues where it stopped.
`spec.tracking` logs the train step to W&B / MLflow as in a cluster, with this machine's
credentials (`wandb login` or `WANDB_API_KEY`; `MLFLOW_TRACKING_TOKEN` or username and password):
the spec's Secrets are a cluster's. On a terminal, training shows a progress bar.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llamaft_trainer.config import DeepSpeedPlan, RunPlan
from llamaft_trainer.errors import BadInputError


def _absolute(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def local_plan(file: Path, gpu_type: str | None) -> RunPlan:
    """Plan the manifest for one local process (no DeepSpeed, one device)."""
    from llamaft_operator.manifest import ManifestError, load_manifest_file
    from llamaft_operator.planner import PlanError, make_plan

    try:
        ft = load_manifest_file(file)
    except (ManifestError, FileNotFoundError) as err:
        raise BadInputError(str(err)) from None
    base = file.resolve().parent
    spec = ft.spec
    dataset = spec.dataset
    for attr in ("source", "golden_set"):
        source = getattr(dataset, attr)
        if source is not None and source.local is not None:
            local = source.local.model_copy(update={"path": _absolute(source.local.path, base)})
            dataset = dataset.model_copy(update={attr: source.model_copy(update={"local": local})})
    publish = spec.publish
    if publish is not None and publish.dir is not None and publish.dir.claim_name is None:
        target = publish.dir.model_copy(update={"path": _absolute(publish.dir.path, base)})
        publish = publish.model_copy(update={"dir": target})
    ft = ft.model_copy(
        update={"spec": spec.model_copy(update={"dataset": dataset, "publish": publish})}
    )
    try:
        plan = make_plan(ft, gpu_type=gpu_type, run_id=f"local-{ft.metadata.name}")
    except PlanError as err:
        raise BadInputError(str(err)) from None
    resources = plan.resources.model_copy(update={"nodes": 1, "gpus_per_node": 1})
    quant = plan.quantization
    if quant is not None:
        quant = quant.model_copy(update={"storage_dtype": "uint8"})
    return plan.model_copy(
        update={
            "resources": resources,
            "deepspeed": DeepSpeedPlan(zero_stage=0),
            "quantization": quant,
        }
    )


def validate_step(plan: RunPlan, workdir: Path) -> dict[str, Any]:
    from llamaft_trainer import data, models
    from llamaft_trainer.commands.data import rows_sha256

    loaded = data.read_source(plan.dataset.source)
    report = data.validate_rows(
        loaded,
        fmt=plan.dataset.format,
        columns=plan.dataset.columns,
        tokenizer=models.load_tokenizer(plan),
        max_seq_length=plan.training.max_seq_length,
        max_bad_rows_fraction=plan.dataset.max_bad_rows_fraction,
    )
    reports = workdir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    record = {**report.to_dict(), "sha256": rows_sha256(loaded), "stats": report.stats()}
    (reports / "data.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
    report.raise_if_unusable()
    return report.summary()


def _train(plan_path: Path, workdir: Path, pilot: bool) -> dict[str, Any]:
    from llamaft_trainer.commands.train import run_training

    return run_training(plan_path, workdir, pilot=pilot)


def evaluate_step(plan: RunPlan, workdir: Path) -> dict[str, Any]:
    from llamaft_trainer import gates
    from llamaft_trainer.evaluate import run_evaluation

    report = run_evaluation(plan, workdir)
    gates.check(plan.evaluation.gates, report["metrics"])
    return report


def publish_step(plan: RunPlan, workdir: Path) -> dict[str, Any]:
    from llamaft_trainer.package import build_package
    from llamaft_trainer.publish import publish

    package = build_package(plan, workdir)
    result = publish(plan, workdir)
    return {**result, "sha256": package.sha256}


Step = tuple[str, Callable[[], dict[str, Any]]]


def run_local(file: Path, *, workdir: Path | None = None, gpu_type: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from llamaft_trainer.tracking import check_installed

    console = Console()
    plan = local_plan(file, gpu_type)
    check_installed(plan.tracking)  # spec.tracking logs the train step here too
    workdir = (workdir or Path("runs") / plan.name).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    plan_path = workdir / "plan.json"
    plan_path.write_text(plan.to_json())
    console.print(
        f"[bold]llamaft run[/] {plan.name}: {plan.model.name} ({plan.method}), work dir {workdir}"
    )
    steps: list[Step] = [("validate", lambda: validate_step(plan, workdir))]
    if plan.pilot is not None and plan.pilot.enabled:
        steps.append(("pilot", lambda: _train(plan_path, workdir, True)))
    steps.append(("train", lambda: _train(plan_path, workdir, False)))
    if plan.method != "full" and (plan.dataset.golden_set or plan.dataset.validation_split > 0):
        steps.append(("evaluate", lambda: evaluate_step(plan, workdir)))
    if plan.publish is not None:
        steps.append(("publish", lambda: publish_step(plan, workdir)))

    summary = Table(title=f"llamaft run {plan.name}")
    for column in ("step", "result", "seconds"):
        summary.add_column(column)
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, step in steps:
            console.rule(name)
            started = time.monotonic()
            results[name] = step()
            summary.add_row(
                name, _describe(name, results[name]), f"{time.monotonic() - started:.0f}"
            )
    finally:
        console.print(summary)
        if "evaluate" in results:
            console.print(_eval_table(results["evaluate"]))


def _describe(step: str, result: dict[str, Any]) -> str:
    if step == "validate":
        return f"{result.get('usableRows')} rows, {result.get('tokens')} tokens"
    if step in ("pilot", "train"):
        first, last = result.get("firstLoss"), result.get("loss")
        loss = f"loss {first:.3f} -> {last:.3f}" if first is not None and last else ""
        return f"{result.get('step')} steps, {loss}"
    if step == "evaluate":
        return str(result.get("headline") or "")
    if step == "publish":
        where = result.get("url") or result.get("path")
        return f"{'unchanged ' if result.get('noop') else ''}{where}"
    return ""


def _eval_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    metrics: dict[str, float] = report.get("metrics", {})
    table = Table(title="golden set: base vs tuned")
    for column in ("metric", "base", "tuned"):
        table.add_column(column)
    for name in ("exactMatch", "tokenF1", "rougeL"):
        tuned, base = metrics.get(f"golden.{name}"), metrics.get(f"golden.base.{name}")
        if tuned is not None:
            table.add_row(name, f"{base:.3f}" if base is not None else "-", f"{tuned:.3f}")
    if "golden.winRateVsBase" in metrics:
        table.add_row("winRateVsBase", "", f"{metrics['golden.winRateVsBase']:.2f}")
    for name in ("loss", "perplexity"):
        value = metrics.get(f"validation.{name}")
        if value is not None:
            table.add_row(f"validation {name}", "", f"{value:.3f}")
    return table
