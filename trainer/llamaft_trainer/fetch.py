"""The fetch step: download the base model at its pinned revision into the model cache, once.

Runs in a CPU pod before the GPU Jobs (in parallel with data validation), so eight multi-node pods
never each pull 140 GB: they all read the shared copy. It is the only pod that holds the Hub read
token (file named by `HF_TOKEN_PATH`). Only safetensors weights are fetched: pickled `.bin`
checkpoints can execute code when loaded, so a repository that has nothing else is refused.

The download goes to a temporary sibling directory that is renamed into place and then marked
complete; concurrent fetches of the same model serialise on a lock file, and the second one finds
the complete copy and skips.

    llamaft fetch --plan /etc/llamaft/plan.json --model-cache /models
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import Any

from llamaft_trainer.config import RunPlan
from llamaft_trainer.errors import BadInputError, LlamaftError
from llamaft_trainer.hub_token import read_token
from llamaft_trainer.model_cache import cache_dir, complete_marker, mark_complete

# Weights, configs, tokenizer and chat-template files; never pickles or framework dumps.
ALLOW_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "*.json",
    "tokenizer.model",
    "*.tiktoken",
    "*.jinja",
    "*.txt",
]


MODEL_TOKEN_FIELD = "spec.model.tokenSecret"


class FetchError(LlamaftError):
    """The Hub could not be reached or failed; the Job retries (exit 1)."""


def fetch_model(plan: RunPlan, root: Path) -> dict[str, Any]:
    """Make `plan.model` available under `root`; returns the step's result."""
    name, revision = plan.model.name, plan.model.revision
    if name.startswith("builtin:"):
        return {"step": "fetch", "model": name, "skipped": "built-in model, nothing to download"}
    target = cache_dir(name, revision, root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = complete_marker(target)
        if done is not None:
            return {"step": "fetch", "model": name, "path": str(target), "cached": True, **done}
        started = time.monotonic()
        commit = _download(name, revision, target)
        files = sorted(p.name for p in target.iterdir() if p.is_file())
        record = {"revision": revision, "commit": commit, "files": len(files)}
        mark_complete(target, record)
    return {
        "step": "fetch",
        "model": name,
        "path": str(target),
        "cached": False,
        "seconds": round(time.monotonic() - started, 1),
        **record,
    }


def _download(name: str, revision: str, target: Path) -> str:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = read_token(MODEL_TOKEN_FIELD)
    endpoint = os.environ.get("HF_ENDPOINT") or None  # self-hosted Hub mirrors, the test Hub
    api = HfApi(token=token, endpoint=endpoint)
    try:
        info = api.model_info(name, revision=revision)
        commit = info.sha or revision
        files = [s.rfilename for s in info.siblings or []]
        if not any(f.endswith(".safetensors") for f in files):
            pickles = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
            raise BadInputError(
                f"spec.model.name: {name}@{revision} has no safetensors weights"
                + (f" (only {', '.join(pickles[:3])})" if pickles else "")
                + "; llamaft loads only safetensors, which cannot run code: convert the "
                "checkpoint or pick a revision that has safetensors"
            )
        partial = target.with_name(target.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        # Pin the download to the commit the revision resolved to, so a branch that moves during
        # the download cannot mix files of two commits.
        snapshot_download(
            name,
            revision=commit,
            local_dir=partial,
            allow_patterns=ALLOW_PATTERNS,
            token=token,
            endpoint=endpoint,
        )
    except (GatedRepoError, RepositoryNotFoundError) as err:
        raise BadInputError(
            f"spec.model.name: no access to {name} ({type(err).__name__}); for gated models "
            "such as meta-llama's, accept the licence on the Hub and set spec.model.tokenSecret "
            "to a Secret with a read token"
        ) from None
    except RevisionNotFoundError:
        raise BadInputError(f"spec.model.revision: {revision!r} does not exist in {name}") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise BadInputError(
                f"spec.model.tokenSecret: the Hub refused the read token for {name} "
                f"(HTTP {status}); check the Secret holds a valid token with access"
            ) from None
        raise FetchError(f"downloading {name}@{revision} failed: {err}; retrying") from err
    # Drop snapshot_download's bookkeeping folder before the copy becomes visible.
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    if target.exists():
        shutil.rmtree(target)  # an unmarked (partial) copy from an earlier, killed fetch
    partial.rename(target)
    return commit
