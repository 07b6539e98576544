"""`llamaft publish`: push `WORKDIR/package/` to the Hub in one atomic commit, or copy it to a dir.

    HF_TOKEN_PATH=/var/run/secrets/hub/token llamaft publish --plan plan.json --workdir /work

**Hub** (`publish.hub`):
- The token is read only from the file named by `HF_TOKEN_PATH` (the operator mounts
  `publish.hub.tokenSecret` there, in the publish pod only). It never travels in argv, is never
  read from an environment value, and never appears in logs, reports or the termination message.
- Endpoint: `publish.hub.endpoint`, else `HF_ENDPOINT`, else https://huggingface.co.
- The repo is created if missing (private per `publish.hub.private`), the branch `revision` too
  (from main). All files go in ONE `HfApi.create_commit`: a reader sees the old package or the
  new one, never a mix. The commit message names the LlamaFineTune; its description ends with the
  trailers `Llamaft-Run-Id: <run id>` and `Llamaft-Content-Hash: sha256:<package content hash>`.
- Republishing identical content is a no-op: when the branch head carries our content hash, or
  every package file is already on the branch with the same git blob id (LFS: SHA-256), the
  existing head commit is returned (`noop: true`).
- Retries: 429 (waiting `Retry-After`, bounded), 408/5xx and connection errors are retried with
  bounded exponential backoff. A commit whose response was lost may have landed, so before
  retrying one we list the branch's commits and take a commit carrying our run id and content
  hash as success: a retry never makes a second commit.
- 401/403: `PublishRejectedError` (exit 3, not retried: the Job fails at once). Out of retries:
  `PublishError` (exit 1: the Job retries the step later, idempotently).

**Directory** (`publish.dir`): the package is copied to a temporary sibling folder and renamed
over the target, so readers never see a half-written package; identical content is a no-op. An
existing target is replaced only if it is empty or a previous llamaft package.

Result (stdout and termination message): `{repo, revision, commit, url, noop}` for the Hub,
`{path, noop}` for a directory, both with `contentHash`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from llamaft_operator.api import DirPublish, HubPublish
from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import BadInputError, LlamaftError, PublishRejectedError
from llamaft_trainer.hub_token import TOKEN_PATH_ENV, require_token
from llamaft_trainer.package import METADATA_FILE, content_hash, file_sha256, package_files

log = logging.getLogger("llamaft.publish")

PUBLISH_TOKEN_FIELD = "publish.hub.tokenSecret"
ENDPOINT_ENV = "HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"
DIR_MOUNT_ENV = "LLAMAFT_PUBLISH_MOUNT"
DEFAULT_DIR_MOUNT = "/mnt/publish"
RUN_ID_TRAILER = "Llamaft-Run-Id"
CONTENT_TRAILER = "Llamaft-Content-Hash"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


class PublishError(LlamaftError):
    """Publishing failed for a reason that may pass (Hub down, rate limit); the Job retries."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: delay = min(max_delay, base_delay * 2**n) + jitter."""

    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 300.0  # a longer Retry-After is cut to this
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return float(backoff + random.uniform(0, backoff / 10))


def publish(plan: RunPlan, workdir: Path, *, policy: RetryPolicy | None = None) -> dict[str, Any]:
    """Publish `WORKDIR/package/` to `plan.publish` (Hub or directory); returns the result."""
    package_dir = Path(workdir) / "package"
    if not (package_dir / METADATA_FILE).is_file():
        raise BadInputError(f"{package_dir} holds no package: run `llamaft package` first")
    if plan.publish is None:
        raise BadInputError("the plan has no publish target: set spec.publish.hub or .dir")
    if plan.publish.hub is not None:
        return publish_hub(plan, package_dir, plan.publish.hub, policy=policy or RetryPolicy())
    assert plan.publish.dir is not None  # validated: exactly one of hub, dir
    return publish_dir(package_dir, plan.publish.dir)


# --- token and endpoint ---------------------------------------------------------------------------


def hub_endpoint(hub: HubPublish) -> str:
    return (hub.endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


# --- errors and retries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    retryable: bool
    retry_after: float | None
    description: str


def _classify(err: Exception, what: str, hub: HubPublish, endpoint: str) -> _Failure:
    """Retryable or not; raises at once for errors retrying cannot fix."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        reason = err.response.headers.get("X-Error-Message") or err.response.reason_phrase
        if status in (401, 403):
            raise PublishRejectedError(
                f"the Hub at {endpoint} refused the token from ${TOKEN_PATH_ENV} with {status} "
                f"({reason}) while trying to {what} on {hub.repo}: the Secret named by "
                "publish.hub.tokenSecret needs a write token with access to that repo"
            ) from None
        if status in RETRY_STATUSES:
            header = err.response.headers.get("Retry-After", "")
            retry_after = float(header) if header.strip().isdigit() else None
            return _Failure(True, retry_after, f"HTTP {status} ({reason})")
        if status == 400:
            raise BadInputError(
                f"the Hub rejected the request to {what} on {hub.repo} as invalid: {reason}"
            ) from None
        raise PublishError(f"the Hub answered {status} ({reason}) to {what} on {hub.repo}")
    if isinstance(err, httpx2.TransportError):
        return _Failure(True, None, f"{type(err).__name__}: {err}")
    if isinstance(err, ValueError):  # e.g. README metadata the Hub refused (validate-yaml)
        raise BadInputError(f"cannot {what} on {hub.repo}: {err}") from None
    raise err


class _Retrier:
    def __init__(self, policy: RetryPolicy, hub: HubPublish, endpoint: str) -> None:
        self.policy, self.hub, self.endpoint = policy, hub, endpoint

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        before_retry: Callable[[], T | None] | None = None,
    ) -> T:
        """`fn()` with retries; `before_retry()` returning non-None ends the loop with its value
        (a lost response whose effect is visible on the remote)."""
        for attempt in range(1, self.policy.attempts + 1):
            try:
                return fn()
            except Exception as err:
                failure = _classify(err, what, self.hub, self.endpoint)
                if attempt == self.policy.attempts:
                    raise PublishError(
                        f"gave up trying to {what} on {self.hub.repo} after {attempt} attempts; "
                        f"last error: {failure.description}. The step is safe to retry."
                    ) from None
                delay = self.policy.delay(attempt, failure.retry_after)
                log.warning(
                    "Retrying %s after %s in %.1fs attempt=%d/%d",
                    what,
                    failure.description,
                    delay,
                    attempt,
                    self.policy.attempts,
                )
                self.policy.sleep(delay)
                if before_retry is not None:
                    done = self.call(f"check the remote before retrying to {what}", before_retry)
                    if done is not None:
                        return done
        raise AssertionError("unreachable: the loop returns or raises")


# --- Hub ----------------------------------------------------------------------------------------


def git_blob_sha1(path: Path) -> str:
    """Git's object id of a file (what the Hub reports as a regular file's oid)."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def trailers(plan: RunPlan, chash: str) -> str:
    return f"{RUN_ID_TRAILER}: {plan.run_id}\n{CONTENT_TRAILER}: sha256:{chash}"


def _commit_text(commit: Any) -> str:
    return f"{commit.title}\n{commit.message or ''}"


@dataclass(frozen=True)
class _Target:
    api: Any
    repo: str
    revision: str
    package_dir: Path
    files: list[str]
    chash: str


def _identical_head(t: _Target) -> str | None:
    """The branch head's commit id when it already holds exactly our files, else None."""
    commits = t.api.list_repo_commits(t.repo, revision=t.revision)
    if not commits:
        return None
    head = commits[0]
    if f"{CONTENT_TRAILER}: sha256:{t.chash}" in _commit_text(head):
        return str(head.commit_id)
    remote: dict[str, Any] = {
        entry.path: entry
        for entry in t.api.list_repo_tree(t.repo, revision=head.commit_id, recursive=True)
        if hasattr(entry, "blob_id")
    }
    for rel in t.files:
        entry = remote.get(rel)
        if entry is None:
            return None
        local = t.package_dir / rel
        if entry.lfs is not None:
            if entry.lfs.sha256 != file_sha256(local):
                return None
        elif entry.blob_id != git_blob_sha1(local):
            return None
    return str(head.commit_id)


def _our_commit(t: _Target, run_id: str) -> str | None:
    """A commit on the branch that carries our run id and content hash (a lost response)."""
    for commit in t.api.list_repo_commits(t.repo, revision=t.revision):
        text = _commit_text(commit)
        if f"{RUN_ID_TRAILER}: {run_id}" in text and f"sha256:{t.chash}" in text:
            return str(commit.commit_id)
    return None


def publish_hub(
    plan: RunPlan, package_dir: Path, hub: HubPublish, *, policy: RetryPolicy
) -> dict[str, Any]:
    from huggingface_hub import CommitOperationAdd, HfApi

    endpoint = hub_endpoint(hub)
    token = require_token(PUBLISH_TOKEN_FIELD, "write")
    api = HfApi(endpoint=endpoint, token=token, library_name="llamaft")
    retrier = _Retrier(policy, hub, endpoint)
    target = _Target(
        api,
        hub.repo,
        hub.revision,
        package_dir,
        package_files(package_dir),
        content_hash(package_dir),
    )

    def result(commit: str, noop: bool) -> dict[str, Any]:
        return {
            "step": "publish",
            "target": "hub",
            "repo": hub.repo,
            "revision": hub.revision,
            "commit": commit,
            "url": f"{endpoint}/{hub.repo}/commit/{commit}",
            "noop": noop,
            "contentHash": target.chash,
        }

    retrier.call(
        "create the repo", lambda: api.create_repo(hub.repo, private=hub.private, exist_ok=True)
    )
    if hub.revision != "main":
        retrier.call(
            f"create the branch {hub.revision}",
            lambda: api.create_branch(hub.repo, branch=hub.revision, exist_ok=True),
        )
    existing = retrier.call("compare the remote package", lambda: _identical_head(target))
    if existing is not None:
        log.info("Package already published repo=%s commit=%s", hub.repo, existing)
        return result(existing, noop=True)

    title = hub.commit_message or f"llamaft: publish LlamaFineTune {plan.namespace}/{plan.name}"
    description = (
        f"Adapter of LlamaFineTune {plan.namespace}/{plan.name} for {plan.model.name}@"
        f"{plan.model.revision}, packaged by llamaft.\n\n{trailers(plan, target.chash)}\n"
    )

    def commit() -> str:
        operations = [  # fresh objects per attempt: create_commit mutates them
            CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(package_dir / rel))
            for rel in target.files
        ]
        info = api.create_commit(
            hub.repo,
            operations,
            commit_message=title,
            commit_description=description,
            revision=hub.revision,
        )
        return str(info.oid)

    sha = retrier.call(
        "commit the package", commit, before_retry=lambda: _our_commit(target, plan.run_id)
    )
    log.info("Published package repo=%s revision=%s commit=%s", hub.repo, hub.revision, sha)
    return result(sha, noop=False)


# --- directory ----------------------------------------------------------------------------------


def dir_target(spec: DirPublish) -> Path:
    """The target folder: `path` as given locally, under the PVC mount in a cluster."""
    if spec.claim_name is None:
        return Path(spec.path).expanduser().absolute()
    return Path(os.environ.get(DIR_MOUNT_ENV, DEFAULT_DIR_MOUNT)) / spec.path.lstrip("/")


def publish_dir(package_dir: Path, spec: DirPublish) -> dict[str, Any]:
    target = dir_target(spec)
    chash = content_hash(package_dir)
    result = {"step": "publish", "target": "dir", "path": str(target), "contentHash": chash}
    if target.exists():
        if not target.is_dir():
            raise BadInputError(f"publish.dir.path {target} exists and is not a directory")
        if any(target.iterdir()) and not (target / METADATA_FILE).is_file():
            raise BadInputError(
                f"publish.dir.path {target} is a non-empty folder that is not a llamaft package; "
                "refusing to replace it: choose an empty or new folder"
            )
        if content_hash(target) == chash:
            return {**result, "noop": True}
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(package_dir, staging)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return {**result, "noop": False}
