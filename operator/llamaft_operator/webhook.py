"""The completion webhook: one JSON POST per terminal state (Succeeded or Failed).

The URL comes from a Secret (URLs of chat webhooks carry their token). A failed POST is retried by
the next reconcile, because the `Notified` condition is only written after a 2xx answer.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


class WebhookError(Exception):
    """The webhook could not be delivered; the message says why (never the URL: it is secret)."""


def post(url: str, payload: Mapping[str, Any], timeout: float) -> None:
    if not url.startswith(("https://", "http://")):
        raise WebhookError("the webhook URL must start with https:// or http://")
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, default=str).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "llamaft-operator"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        raise WebhookError(f"the webhook answered {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise WebhookError(f"the webhook could not be reached: {reason}") from None
    if not 200 <= status < 300:
        raise WebhookError(f"the webhook answered {status}")
