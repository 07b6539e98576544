"""`llamaft plan`, `llamaft validate`, `llamaft crd`: offline tools on manifests (no torch)."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml

from llamaft_trainer.errors import BadInputError

if TYPE_CHECKING:
    from llamaft_operator.catalogue import GpuCatalogue

CATALOGUE_ENV = "LLAMAFT_GPU_CATALOGUE"


class OutputFormat(StrEnum):
    json = "json"
    yaml = "yaml"
    table = "table"


def _catalogue() -> GpuCatalogue:
    from llamaft_operator.catalogue import GpuCatalogue

    text = os.environ.get(CATALOGUE_ENV)
    return GpuCatalogue.from_json(text) if text else GpuCatalogue()


def plan_command(
    file: Annotated[Path, typer.Argument(help="LlamaFineTune manifest (YAML).")],
    gpu_type: Annotated[
        str | None, typer.Option("--gpu-type", help="GPU catalogue entry, e.g. H100-80GB.")
    ] = None,
    dataset_tokens: Annotated[
        int | None, typer.Option("--dataset-tokens", help="Dataset size in tokens, if known.")
    ] = None,
    output: Annotated[OutputFormat, typer.Option("-o", "--output")] = OutputFormat.table,
) -> None:
    """Print the run plan: nodes, GPUs, ZeRO stage, batch, memory estimate, GPU-hours."""
    from llamaft_operator.manifest import ManifestError, load_manifest_file
    from llamaft_operator.planner import PlanError, make_plan

    try:
        ft = load_manifest_file(file)
        plan = make_plan(
            ft, catalogue=_catalogue(), gpu_type=gpu_type, dataset_tokens=dataset_tokens
        )
    except (ManifestError, PlanError, FileNotFoundError) as err:
        raise BadInputError(str(err)) from None
    data = json.loads(plan.to_json())
    if output is OutputFormat.json:
        typer.echo(json.dumps(data, indent=2))
    elif output is OutputFormat.yaml:
        typer.echo(yaml.safe_dump(data, sort_keys=False))
    else:
        _print_plan_table(data)


def _print_plan_table(plan: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    res: dict[str, object] = plan["resources"]  # type: ignore[assignment]
    tr: dict[str, object] = plan["training"]  # type: ignore[assignment]
    est: dict[str, object] = plan["estimate"]  # type: ignore[assignment]
    ds: dict[str, object] = plan["deepspeed"]  # type: ignore[assignment]
    model: dict[str, object] = plan["model"]  # type: ignore[assignment]
    table = Table(title=f"Plan for {plan['name']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    params = int(model["parameters"])  # type: ignore[call-overload]
    table.add_row("model", f"{model['name']} ({params / 1e9:.2f}B)")
    table.add_row("method", str(plan["method"]))
    table.add_row(
        "resources",
        f"{res['nodes']} node(s) x {res['gpusPerNode']} x {res['gpuType']}",
    )
    stage = ds["zeroStage"]
    table.add_row("deepspeed", "none (single GPU)" if stage == 0 else f"ZeRO-{stage}")
    table.add_row(
        "batch",
        f"{tr['perDeviceBatchSize']} per GPU x {tr['gradientAccumulationSteps']} accumulation"
        f" = {tr['globalBatchSize']} sequences of {tr['maxSeqLength']} tokens",
    )
    table.add_row("gradient checkpointing", str(tr["gradientCheckpointing"]))
    table.add_row("peak memory / GPU", f"{est['peakMemoryGiBPerGpu']} GiB")
    breakdown: dict[str, float] = est["memoryBreakdownGiB"]  # type: ignore[assignment]
    for k, v in breakdown.items():
        table.add_row(f"  {k}", f"{v:.2f} GiB")
    table.add_row("throughput (est.)", f"{est['tokensPerSecond']} tokens/s")
    for key, label in (
        ("stepsTotal", "steps"),
        ("gpuHours", "GPU-hours"),
        ("durationHours", "duration (h)"),
        ("costUsd", "cost (USD)"),
    ):
        if key in est:
            table.add_row(label, str(est[key]))
    for note in est.get("notes", []):  # type: ignore[attr-defined]
        table.add_row("note", str(note))
    Console().print(table)


def validate_command(
    files: Annotated[list[Path], typer.Argument(help="Manifests to check.")],
) -> None:
    """Check manifests offline with the same models the CRD is generated from."""
    from llamaft_operator.manifest import ManifestError, load_manifest_file

    failed = []
    for f in files:
        try:
            ft = load_manifest_file(f)
        except FileNotFoundError:
            failed.append(f"{f}: file not found")
            continue
        except ManifestError as err:
            failed.append(str(err))
            continue
        typer.echo(f"{f}: valid LlamaFineTune {ft.metadata.name}")
    if failed:
        raise BadInputError("\n".join(failed))


def crd_command(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the LlamaFineTune CustomResourceDefinition (generated from the API models)."""
    from llamaft_operator.crd import render_crd_yaml

    text = render_crd_yaml()
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
    app.command("validate")(validate_command)
    app.command("crd")(crd_command)
