"""A step's pod reads the plan revision its Job was created for, never an older kubelet copy.

The mounted directory is laid out as the kubelet writes a ConfigMap volume (files are symlinks
into `..data`, which points at a timestamped directory and is swapped in one rename), and the
refresh happens inside the injected `sleep`, so the test needs no timing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamaft_trainer.config import RunPlan
from llamaft_trainer.plan_file import REVISION_ENV, StalePlanError, load_plan
from tests.unit.trainer_helpers import tiny_plan

pytestmark = pytest.mark.unit


class KubeletVolume:
    """A ConfigMap volume: `..data` -> `..<n>/`, `plan.json` and `revision` -> `..data/...`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.writes = 0
        root.mkdir()

    def write(self, plan: RunPlan, revision: int | None) -> None:
        self.writes += 1
        stamp = self.root / f"..{self.writes}"
        stamp.mkdir()
        (stamp / "plan.json").write_text(plan.to_json())
        if revision is not None:
            (stamp / "revision").write_text(str(revision))
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp.name)
        os.replace(tmp, self.root / "..data")  # the kubelet's atomic swap
        for name in ("plan.json", "revision"):
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.json"


def must_not_wait(seconds: float) -> None:
    raise AssertionError("must not wait")


@pytest.fixture
def plans() -> tuple[RunPlan, RunPlan]:
    initial = tiny_plan()
    return initial, initial.model_copy(update={"final": True})


def test_waits_until_the_kubelet_mounts_the_revision_of_its_job(
    tmp_path: Path, plans: tuple[RunPlan, RunPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    initial, final = plans
    volume = KubeletVolume(tmp_path / "plan")
    volume.write(initial, 1)
    monkeypatch.setenv(REVISION_ENV, "2")
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 3:  # the kubelet's cache catches up
            volume.write(final, 2)

    loaded = load_plan(volume.plan_path, sleep=sleep)
    assert loaded.final is True, "the stale initial plan must not be used"
    assert len(polls) == 3


def test_a_newer_revision_is_used_at_once(
    tmp_path: Path, plans: tuple[RunPlan, RunPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retried pod of an older Job runs with the current plan (e.g. new publish settings)."""
    _, final = plans
    volume = KubeletVolume(tmp_path / "plan")
    volume.write(final, 3)
    monkeypatch.setenv(REVISION_ENV, "2")

    assert load_plan(volume.plan_path, sleep=must_not_wait).final is True


def test_a_plan_that_never_refreshes_fails_the_pod_for_a_retry(
    tmp_path: Path, plans: tuple[RunPlan, RunPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    initial, _ = plans
    volume = KubeletVolume(tmp_path / "plan")
    volume.write(initial, 1)
    monkeypatch.setenv(REVISION_ENV, "2")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(StalePlanError) as err:
        load_plan(volume.plan_path, wait_seconds=30, sleep=sleep, clock=lambda: now[0])
    assert err.value.exit_code == 1, "counted against backoffLimit: the retried pod tries again"
    message = str(err.value)
    assert "revision 1" in message and "revision 2" in message and "30 s" in message
    assert now[0] == pytest.approx(30, abs=1)


def test_without_the_variable_the_file_is_read_as_it_is(
    tmp_path: Path, plans: tuple[RunPlan, RunPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`llamaft run` and hand-written plans: no revision file, no variable, no wait."""
    initial, _ = plans
    monkeypatch.delenv(REVISION_ENV, raising=False)
    volume = KubeletVolume(tmp_path / "plan")
    volume.write(initial, None)

    assert load_plan(volume.plan_path, sleep=must_not_wait) == initial
