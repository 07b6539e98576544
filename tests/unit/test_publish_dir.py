"""`publish.dir`: atomic copy of the package, identical content is a no-op."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaft_trainer.errors import BadInputError
from llamaft_trainer.package import build_package, content_hash
from llamaft_trainer.publish import publish
from tests.hub.workdirs import make_run_plan, make_workdir

pytestmark = pytest.mark.unit


def test_dir_publish_copies_then_noops_then_replaces(tmp_path: Path) -> None:
    target = tmp_path / "out" / "support-bot"
    plan = make_run_plan(publish={"dir": {"path": str(target)}})
    workdir = make_workdir(tmp_path / "w")
    built = build_package(plan, workdir)

    first = publish(plan, workdir)
    assert first == {
        "step": "publish",
        "target": "dir",
        "path": str(target),
        "contentHash": built.content_hash,
        "noop": False,
    }
    assert content_hash(target) == built.content_hash
    assert publish(plan, workdir)["noop"] is True

    make_workdir(workdir, weights=[3.0])
    rebuilt = build_package(plan, workdir)
    third = publish(plan, workdir)
    assert third["noop"] is False and content_hash(target) == rebuilt.content_hash
    assert sorted(p.name for p in target.parent.iterdir()) == ["support-bot"]  # no leftovers


def test_dir_publish_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    target = tmp_path / "home"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    plan = make_run_plan(publish={"dir": {"path": str(target)}})
    workdir = make_workdir(tmp_path / "w")
    build_package(plan, workdir)
    with pytest.raises(BadInputError, match="not a llamaft package"):
        publish(plan, workdir)
    assert (target / "precious.txt").read_text() == "keep me"


def test_dir_publish_on_a_pvc_uses_the_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMAFT_PUBLISH_MOUNT", str(tmp_path / "mnt"))
    plan = make_run_plan(publish={"dir": {"path": "models/bot", "claimName": "shared"}})
    workdir = make_workdir(tmp_path / "w")
    build_package(plan, workdir)
    assert publish(plan, workdir)["path"] == str(tmp_path / "mnt" / "models" / "bot")
