"""`llamaft package`: turn `WORKDIR/adapter/` into a publishable, reproducible package.

    llamaft package --plan plan.json --workdir /work

Writes `WORKDIR/package/` with
- `adapter_config.json`, `adapter_model.safetensors`: the PEFT adapter. Safetensors only: a
  pickle (`.bin`, `.pt`, `.pkl`, ...) in the adapter folder fails packaging, since loading one runs
  arbitrary code on the user's machine.
- tokenizer files (from `adapter/`, else `WORKDIR/tokenizer/`),
- `README.md`: the model card (`model_card.py`),
- `llamaft_metadata.json`: the plan, dataset hash and stats (`reports/data.json`), library
  versions, llamaft's git revision, start/end times from the reports, and each file's SHA-256,
- `requirements.txt`: what loading the adapter needs,
- `eval.json`: the evaluation report, when there is one,

plus `WORKDIR/package.tar.gz` and `WORKDIR/package.tar.gz.sha256` (`sha256sum` format).

Deterministic: the same inputs give byte-identical files and tarball (sorted entries, fixed
mtimes, owners and modes, gzip without a timestamp, no "packaged at" time anywhere), so publish can
tell that identical content is already on the Hub. `content_hash(dir)` is the package's identity.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import BadInputError
from llamaft_trainer.model_card import CardInputs, build_model_card

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
METADATA_FILE = "llamaft_metadata.json"
LIBRARIES = (
    "llamaft",
    "torch",
    "transformers",
    "peft",
    "huggingface-hub",
    "safetensors",
    "accelerate",
    "bitsandbytes",
    "deepspeed",
)
GIT_REVISION_ENV = "LLAMAFT_GIT_REVISION"
TAR_MTIME = 0  # 1970-01-01: the tarball's bytes depend on content only


class PackageError(BadInputError):
    """The adapter or reports cannot be packaged as they are."""


@dataclass(frozen=True)
class PackageResult:
    """Where the package is and what identifies it."""

    path: Path
    tarball: Path
    sha256: str  # of the tarball
    content_hash: str  # of the package folder's files (see `content_hash`)
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "tarball": str(self.tarball),
            "sha256": self.sha256,
            "contentHash": self.content_hash,
            "files": self.files,
        }


# --- hashing ------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_files(directory: Path) -> list[str]:
    """Relative POSIX paths of the regular files under `directory`, sorted."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def content_hash(directory: Path) -> str:
    """SHA-256 over the sorted (path, file SHA-256) pairs: equal iff the packages are equal."""
    digest = hashlib.sha256()
    for rel in package_files(directory):
        digest.update(f"{rel}\0{file_sha256(directory / rel)}\n".encode())
    return digest.hexdigest()


# --- inputs -------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PackageError(
            f"{path} is not valid JSON ({err}); rerun the step that wrote it"
        ) from err
    return data if isinstance(data, dict) else {}


def check_safetensors(path: Path) -> None:
    """The file starts with a safetensors header (u64 length + JSON object)."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise PackageError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024 or length > path.stat().st_size - 8:
            raise PackageError(f"{path} is not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PackageError(f"{path} is not a safetensors file (header: {err})") from err
    if not isinstance(header, dict):
        raise PackageError(f"{path} is not a safetensors file (header is not an object)")


def adapter_sources(workdir: Path) -> dict[str, Path]:
    """Package path -> source file for the adapter and tokenizer; refuses pickles."""
    adapter = workdir / "adapter"
    if not adapter.is_dir():
        raise PackageError(
            f"{adapter} does not exist: run `llamaft train` first, which saves the adapter there"
        )
    pickles = sorted(p.name for p in adapter.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PackageError(
            f"{adapter} holds pickle files ({', '.join(pickles)}): loading them runs arbitrary "
            "code, so llamaft publishes safetensors only. Save the adapter with "
            "save_pretrained(..., safe_serialization=True) and remove the pickles."
        )
    sources: dict[str, Path] = {}
    for name in ADAPTER_FILES:
        if not (adapter / name).is_file():
            raise PackageError(f"{adapter / name} is missing: the adapter is incomplete, retrain")
        sources[name] = adapter / name
    check_safetensors(sources["adapter_model.safetensors"])
    for folder in (adapter, workdir / "tokenizer"):
        for name in TOKENIZER_FILES:
            if name not in sources and (folder / name).is_file():
                sources[name] = folder / name
    return sources


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def git_revision() -> str | None:
    """llamaft's git commit: `LLAMAFT_GIT_REVISION` (set in images), else the source checkout's."""
    if os.environ.get(GIT_REVISION_ENV):
        return os.environ[GIT_REVISION_ENV]
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _times(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    times: dict[str, Any] = {}
    for step, report in reports.items():
        for key in ("startTime", "endTime", "durationSeconds"):
            if key in report:
                times[f"{step}{key[0].upper()}{key[1:]}"] = report[key]
    return times


def requirements(plan: RunPlan, versions: dict[str, str]) -> str:
    """Loading requirements, lower-bounded by the versions the adapter was made with."""
    names = ["peft", "transformers", "torch", "huggingface-hub", "safetensors", "accelerate"]
    if plan.method == "qlora":
        names.append("bitsandbytes")
    lines = ["# What loading this adapter needs: pip install -r requirements.txt"]
    lines += [f"{n}>={versions[n]}" if n in versions else n for n in names]
    return "\n".join(lines) + "\n"


# --- build --------------------------------------------------------------------------------------


def build_package(plan: RunPlan, workdir: Path) -> PackageResult:
    """Write `WORKDIR/package/` and its tarball (see the module docstring)."""
    workdir = Path(workdir)
    sources = adapter_sources(workdir)
    reports_dir = workdir / "reports"
    eval_report = _read_json(reports_dir / "eval.json")
    train_report = _read_json(reports_dir / "train.json")
    data_report = _read_json(reports_dir / "data.json")
    data_stats = data_report.get("stats", data_report)

    card = build_model_card(
        plan,
        CardInputs(
            metrics=eval_report.get("metrics", {}),
            samples=eval_report.get("samples", []),
            gates=eval_report.get("gates", []),
            data_stats=data_stats if isinstance(data_stats, dict) else {},
            training=train_report.get("summary", train_report),
            golden_examples=eval_report.get("golden", {}).get("examples"),
        ),
    )
    versions = library_versions()

    staging = workdir / ".package.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, src in sorted(sources.items()):
        shutil.copyfile(src, staging / name)
    (staging / "README.md").write_text(card)
    (staging / "requirements.txt").write_text(requirements(plan, versions))
    if eval_report:
        (staging / "eval.json").write_text(_dump(eval_report))
    meta = {
        "llamaft": {"version": versions.get("llamaft"), "gitRevision": git_revision()},
        "run": {"namespace": plan.namespace, "name": plan.name, "runId": plan.run_id},
        "plan": json.loads(plan.to_json()),
        "dataset": {
            key: data_report[key]
            for key in ("sha256", "source", "format", "stats", "golden")
            if key in data_report
        },
        "libraries": versions,
        "times": _times({"train": train_report, "eval": eval_report}),
        "files": {rel: file_sha256(staging / rel) for rel in package_files(staging)},
    }
    (staging / METADATA_FILE).write_text(_dump(meta))

    target = workdir / "package"
    _replace_dir(staging, target)
    tarball = workdir / "package.tar.gz"
    digest = write_tarball(target, tarball, root=plan.name)
    (workdir / "package.tar.gz.sha256").write_text(f"{digest}  {tarball.name}\n")
    return PackageResult(
        path=target,
        tarball=tarball,
        sha256=digest,
        content_hash=content_hash(target),
        files=package_files(target),
    )


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def _replace_dir(staging: Path, target: Path) -> None:
    """Swap `staging` into `target`; a crash leaves either the old or the new package."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def write_tarball(directory: Path, tarball: Path, *, root: str) -> str:
    """A reproducible .tar.gz of `directory` under `root/`; returns its SHA-256."""
    tmp = tarball.with_name(tarball.name + ".tmp")
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in package_files(directory):
            path = directory / rel
            info = tarfile.TarInfo(f"{root}/{rel}")
            info.size, info.mtime, info.mode = path.stat().st_size, TAR_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as f:
                tar.addfile(info, f)
    tmp.replace(tarball)
    return file_sha256(tarball)
