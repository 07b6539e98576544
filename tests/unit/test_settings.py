"""Operator settings from the environment: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import json

import pytest

from llamaft_operator.settings import ENV, Settings, SettingsError

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.clusterwide
    assert s.trainer_service_account == "llamaft-trainer"
    assert s.progress_interval_seconds == 30
    assert s.default_gpu_type == "H100-80GB"
    assert s.gpu_catalogue.get(None).name == "H100-80GB"
    assert s.peering_name is None
    assert s.manage_trainer_rbac is True


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("LLAMAFT_NAMESPACES", "ml, dev", "namespaces", ("ml", "dev")),
        (
            "LLAMAFT_TRAINER_IMAGE",
            "reg/trainer@sha256:abc",
            "trainer_image",
            "reg/trainer@sha256:abc",
        ),
        ("LLAMAFT_IMAGE_PULL_SECRETS", "a,b", "image_pull_secrets", ("a", "b")),
        ("LLAMAFT_STORAGE_CLASS", "fast", "storage_class", "fast"),
        ("LLAMAFT_MODEL_CACHE_SIZE", "2Ti", "model_cache_size", "2Ti"),
        ("LLAMAFT_MANAGE_TRAINER_RBAC", "false", "manage_trainer_rbac", False),
        ("LLAMAFT_PROGRESS_INTERVAL", "10", "progress_interval_seconds", 10),
        ("LLAMAFT_PRICE_PER_GPU_HOUR", "2.5", "price_per_gpu_hour", 2.5),
        ("LLAMAFT_ERROR_BACKOFFS", "1,5", "error_backoffs", (1.0, 5.0)),
        ("LLAMAFT_PEERING", "llamaft", "peering_name", "llamaft"),
        ("LLAMAFT_PEERING_PRIORITY", "7", "peering_priority", 7),
        ("LLAMAFT_METRICS_PORT", "0", "metrics_port", 0),
        ("LLAMAFT_STORAGE_CLASS", "", "storage_class", None),  # empty keeps the default
    ],
)
def test_parsing(variable: str, value: str, field: str, expected: object) -> None:
    assert getattr(Settings.from_env({variable: value}), field) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LLAMAFT_PROGRESS_INTERVAL", "soon"),
        ("LLAMAFT_PROGRESS_INTERVAL", "-1"),
        ("LLAMAFT_MANAGE_TRAINER_RBAC", "maybe"),
        ("LLAMAFT_IMAGE_PULL_POLICY", "Sometimes"),
        ("LLAMAFT_WORK_ACCESS_MODE", "ReadOnlyMany"),
        ("LLAMAFT_MODEL_CACHE_SIZE", "big"),
        ("LLAMAFT_DEFAULT_GPU_TYPE", "TPU-v5"),
        ("LLAMAFT_GPU_CATALOGUE", "{not json"),
        ("LLAMAFT_GPU_CATALOGUE", json.dumps([{"name": "x"}])),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_catalogue_and_default_type() -> None:
    catalogue = [{"name": "L40S", "memoryGib": 45, "bf16Tflops": 362, "gpusPerNode": 4}]
    s = Settings.from_env(
        {"LLAMAFT_GPU_CATALOGUE": json.dumps(catalogue), "LLAMAFT_DEFAULT_GPU_TYPE": "L40S"}
    )
    assert s.gpu_catalogue.names() == ["L40S"]
    assert s.gpu_catalogue.get(None).gpus_per_node == 4


def test_every_field_has_a_variable_and_a_docstring() -> None:
    import ast
    import inspect

    from llamaft_operator import settings as module

    assert set(ENV.values()) == {f for f in Settings.__dataclass_fields__}
    tree = ast.parse(inspect.getsource(module))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    documented = set()
    for prev, node in zip(cls.body, cls.body[1:], strict=False):
        if isinstance(prev, ast.AnnAssign) and isinstance(node, ast.Expr):
            assert isinstance(prev.target, ast.Name)
            documented.add(prev.target.id)
            text = node.value.value  # type: ignore[attr-defined]
            assert "LLAMAFT_" in text, f"{prev.target.id}'s docstring names no variable"
    assert documented == set(Settings.__dataclass_fields__)
