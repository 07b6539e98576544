"""`llamaft publish` against the Hub test server with the real huggingface_hub client."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, hf_hub_download

from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import EXIT_PUBLISH_REJECTED, BadInputError, PublishRejectedError
from llamaft_trainer.package import build_package
from llamaft_trainer.publish import CONTENT_TRAILER, RUN_ID_TRAILER, PublishError, RetryPolicy
from llamaft_trainer.publish import publish as publish_package
from tests.hub.fixtures import HUB_READ_TOKEN, HUB_WRITE_TOKEN
from tests.hub.server import HubServer
from tests.hub.workdirs import REPO, hub_publish, make_run_plan, make_workdir

pytestmark = pytest.mark.unit


class Sleeps:
    """A RetryPolicy.sleep that records instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "secret" / "token"
    path.parent.mkdir()
    path.write_text(HUB_WRITE_TOKEN + "\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return path


def setup(hub: HubServer, tmp_path: Path, **publish_fields: object) -> tuple[RunPlan, Path]:
    plan = make_run_plan(publish=hub_publish(endpoint=hub.url, **publish_fields))
    workdir = make_workdir(tmp_path / "work")
    build_package(plan, workdir)
    return plan, workdir


def run(plan: RunPlan, workdir: Path, sleeps: Sleeps | None = None, attempts: int = 5) -> dict:
    policy = RetryPolicy(
        attempts=attempts, base_delay=0.01, max_delay=0.05, sleep=sleeps or Sleeps()
    )
    return publish_package(plan, workdir, policy=policy)


def our_commits(hub: HubServer, revision: str = "main") -> list[str]:
    return [c.oid for c in hub.iter_commits(REPO, revision) if c.author != "system"]


def test_publish_lands_exactly_one_commit_and_the_card_parses(
    hub_server: HubServer, tmp_path: Path, token_file: Path
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    result = run(plan, workdir)

    [sha] = our_commits(hub_server)
    assert result == {
        "step": "publish",
        "target": "hub",
        "repo": REPO,
        "revision": "main",
        "commit": sha,
        "url": f"{hub_server.url}/{REPO}/commit/{sha}",
        "noop": False,
        "contentHash": result["contentHash"],
    }
    repo = hub_server.repo(REPO)
    assert repo.private
    head = repo.resolve("main")
    assert head is not None
    assert "LlamaFineTune ml/support-bot" in head.title
    assert f"{RUN_ID_TRAILER}: {plan.run_id}" in head.message
    assert f"{CONTENT_TRAILER}: sha256:{result['contentHash']}" in head.message
    package = workdir / "package"
    expected = {p.name: p.read_bytes() for p in package.iterdir()}
    files = hub_server.files(REPO)
    assert files.pop(".gitattributes")
    assert files == expected

    readme = hf_hub_download(
        REPO, "README.md", endpoint=hub_server.url, token=HUB_WRITE_TOKEN, cache_dir=tmp_path / "c"
    )
    card = ModelCard.load(readme)
    assert card.data.base_model == plan.model.name
    assert card.data.library_name == "peft"


def test_publish_to_a_new_branch_leaves_main_alone(
    hub_server: HubServer, tmp_path: Path, token_file: Path
) -> None:
    plan, workdir = setup(hub_server, tmp_path, revision="release", private=False)
    result = run(plan, workdir)
    assert our_commits(hub_server, "main") == []
    assert our_commits(hub_server, "release") == [result["commit"]]
    assert not hub_server.repo(REPO).private


def test_second_publish_of_the_same_package_is_a_noop(
    hub_server: HubServer, tmp_path: Path, token_file: Path
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    first = run(plan, workdir)
    build_package(plan, workdir)  # rebuilt: byte-identical
    second = run(plan, workdir)
    assert second["noop"] is True
    assert second["commit"] == first["commit"]
    assert len(our_commits(hub_server)) == 1
    assert not hub_server.requests_to("commit")[1:]


def test_identical_files_under_a_foreign_head_commit_are_a_noop(
    hub_server: HubServer, tmp_path: Path, token_file: Path
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    run(plan, workdir)
    api = HfApi(endpoint=hub_server.url, token=HUB_WRITE_TOKEN)
    from huggingface_hub import CommitOperationAdd

    foreign = api.create_commit(
        REPO, [CommitOperationAdd("NOTES.md", b"hand-written notes")], commit_message="notes"
    )
    again = run(plan, workdir)
    assert again == {**again, "noop": True, "commit": foreign.oid}
    assert len(our_commits(hub_server)) == 2  # ours + the foreign one, nothing new


def test_changed_package_makes_a_new_commit(
    hub_server: HubServer, tmp_path: Path, token_file: Path
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    first = run(plan, workdir)
    make_workdir(workdir, weights=[7.0, 8.0])
    build_package(plan, workdir)
    second = run(plan, workdir)
    assert second["noop"] is False and second["commit"] != first["commit"]
    assert len(our_commits(hub_server)) == 2


@pytest.mark.parametrize(
    ("endpoint", "fault", "commit_requests", "our_sleeps"),
    [
        ("commit", {"status": 500, "times": 2}, 3, 2),
        ("commit", {"status": 503}, 2, 1),
        ("commit", {"status": 429, "retry_after": 1}, 2, 1),
        ("create_repo", {"status": 500, "times": 2}, 1, 2),
        # Paginated listings are retried by huggingface_hub itself (1 s), before we see them.
        ("commits", {"status": 502}, 1, 0),
    ],
)
def test_transient_errors_are_retried_into_exactly_one_commit(
    hub_server: HubServer,
    tmp_path: Path,
    token_file: Path,
    endpoint: str,
    fault: dict[str, int],
    commit_requests: int,
    our_sleeps: int,
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    # Make the tree listing happen: a foreign head, so the content-hash shortcut does not apply.
    hub_server.create_repo(REPO)
    hub_server.fail(endpoint, **fault)
    sleeps = Sleeps()
    result = run(plan, workdir, sleeps)
    assert our_commits(hub_server) == [result["commit"]]
    assert len(hub_server.requests_to("commit")) == commit_requests
    assert len(sleeps.calls) == our_sleeps
    if "retry_after" in fault:
        assert sleeps.calls == [1.0]  # Retry-After honoured


@pytest.mark.parametrize("then", [None, {"status": 500}, "drop"])
def test_lost_commit_response_is_found_on_the_remote_not_recommitted(
    hub_server: HubServer, tmp_path: Path, token_file: Path, then: object
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    hub_server.drop("commit", after=True)  # applied, then the connection closes
    if then == "drop":
        hub_server.drop("commits", after=False)  # and the first check fails too
    elif isinstance(then, dict):
        hub_server.fail("commit", **then)
    result = run(plan, workdir)
    assert our_commits(hub_server) == [result["commit"]]
    assert result["noop"] is False
    assert len(hub_server.requests_to("commit")) == 1


def test_commit_dropped_before_it_lands_is_retried(
    hub_server: HubServer, tmp_path: Path, token_file: Path
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    hub_server.drop("commit", after=False)
    result = run(plan, workdir)
    assert our_commits(hub_server) == [result["commit"]]
    assert len(hub_server.requests_to("commit")) == 2


def test_out_of_retries_is_a_retryable_error_with_no_commit(
    hub_server: HubServer, tmp_path: Path, token_file: Path
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    hub_server.fail("commit", 500, times=10)
    with pytest.raises(PublishError, match=r"after 3 attempts.*HTTP 500.*safe to retry") as info:
        run(plan, workdir, attempts=3)
    assert info.value.exit_code not in (0, 2, 3)
    assert our_commits(hub_server) == []


@pytest.mark.parametrize(
    ("token", "status"), [("hf_wrong_token_0123456789", 401), (HUB_READ_TOKEN, 403)]
)
def test_auth_errors_are_rejected_without_retry(
    hub_server: HubServer, tmp_path: Path, token_file: Path, token: str, status: int
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    token_file.write_text(token)
    sleeps = Sleeps()
    with pytest.raises(PublishRejectedError, match=rf"{status}.*write token") as info:
        run(plan, workdir, sleeps)
    assert info.value.exit_code == EXIT_PUBLISH_REJECTED
    assert token not in str(info.value)
    assert sleeps.calls == []
    assert REPO not in hub_server.state.repos


def test_injected_401_on_commit_is_rejected(
    hub_server: HubServer, tmp_path: Path, token_file: Path
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    hub_server.fail("commit", 401)
    with pytest.raises(PublishRejectedError):
        run(plan, workdir)
    assert our_commits(hub_server) == []
    assert len(hub_server.requests_to("commit")) == 1


def test_token_must_come_from_the_token_file(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, workdir = setup(hub_server, tmp_path)
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HF_TOKEN", HUB_WRITE_TOKEN)  # an env value is never used
    with pytest.raises(BadInputError, match="HF_TOKEN_PATH is not set"):
        run(plan, workdir)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(BadInputError, match="cannot read the Hub token file"):
        run(plan, workdir)


def test_publish_needs_a_package(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="llamaft package"):
        run(make_run_plan(publish=hub_publish()), tmp_path)
