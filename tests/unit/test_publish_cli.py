"""`llamaft package` + `llamaft publish` as processes: JSON result, exit codes, no token leaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamaft_trainer.errors import EXIT_PUBLISH_REJECTED
from tests.hub.fixtures import HUB_WRITE_TOKEN
from tests.hub.server import HubServer
from tests.hub.workdirs import REPO, hub_publish, make_run_plan, make_workdir

pytestmark = pytest.mark.unit


def llamaft(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaft_trainer", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def all_text_under(folder: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()
    )


@pytest.mark.parametrize("token_is_valid", [True, False])
def test_cli_publish_reports_json_and_never_leaks_the_token(
    hub_server: HubServer, tmp_path: Path, token_is_valid: bool
) -> None:
    token = HUB_WRITE_TOKEN if token_is_valid else "hf_NOTKNOWNtokenLEAKcheck0123456789"
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(make_run_plan(publish=hub_publish()).to_json())
    workdir = make_workdir(tmp_path / "work")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "token").write_text(token)
    termination = tmp_path / "termination-log"
    env = {
        "HF_TOKEN_PATH": str(tmp_path / "secret" / "token"),
        "HF_ENDPOINT": hub_server.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "LLAMAFT_TERMINATION_LOG": str(termination),
    }
    args = ["--plan", str(plan_file), "--workdir", str(workdir)]
    packaged = llamaft(["package", *args], env)
    assert packaged.returncode == 0, packaged.stderr
    assert json.loads(packaged.stdout)["step"] == "package"

    hub_server.fail("commit", 500)  # a retry, so the retry path's logging is covered too
    published = llamaft(["publish", *args], env)
    outputs = published.stdout + published.stderr + termination.read_text()
    outputs += all_text_under(workdir)
    assert token not in outputs
    if token_is_valid:
        assert published.returncode == 0, published.stderr
        result = json.loads(published.stdout)
        assert result["repo"] == REPO and result["noop"] is False
        assert json.loads(termination.read_text())["commit"] == result["commit"]
        assert "Retrying commit the package after HTTP 500" in published.stderr
    else:
        assert published.returncode == EXIT_PUBLISH_REJECTED
        assert "refused the token" in published.stderr
        assert REPO not in hub_server.state.repos
