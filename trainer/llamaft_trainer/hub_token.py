"""The Hugging Face Hub token, read from the file `$HF_TOKEN_PATH` names: one reader for every step.

The operator mounts a Secret key as a file and sets `HF_TOKEN_PATH` to it, only in the pods that
need it (fetch: `spec.model.tokenSecret`; validate/pilot/train/eval: `spec.dataset.tokenSecret`;
publish: `spec.publish.hub.tokenSecret`). A token never travels in argv or as an environment value
(`HF_TOKEN` is ignored on purpose: it would leak into `/proc/<pid>/environ` and crash reports).
Locally, point `HF_TOKEN_PATH` at a file holding the token.

`field` names the spec field whose Secret provides the token, so every error says what to fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from llamaft_trainer.errors import BadInputError

TOKEN_PATH_ENV = "HF_TOKEN_PATH"


def read_token(field: str) -> str | None:
    """The token, or None when `HF_TOKEN_PATH` is unset or the file is empty (public repos)."""
    path = os.environ.get(TOKEN_PATH_ENV)
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as err:
        raise BadInputError(
            f"cannot read the Hub token file {path} ({TOKEN_PATH_ENV}: {err.strerror}): check "
            f"{field} names an existing Secret and key (locally: point {TOKEN_PATH_ENV} at a "
            "file holding the token)"
        ) from None
    return token or None


def require_token(field: str, scope: str = "write") -> str:
    """The token, which must be there: a missing variable or an empty file is bad input."""
    if not os.environ.get(TOKEN_PATH_ENV):
        raise BadInputError(
            f"{TOKEN_PATH_ENV} is not set: point it at a file holding a Hub {scope} token (in a "
            f"cluster the operator mounts {field} and sets it)"
        )
    token = read_token(field)
    if token is None:
        raise BadInputError(
            f"the Hub token file {os.environ[TOKEN_PATH_ENV]} is empty: put a {scope} token in "
            f"the Secret {field} names"
        )
    return token
