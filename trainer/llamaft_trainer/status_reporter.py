"""Patch live training progress onto the LlamaFineTune's `status.progress` (torch-free, stdlib).

In a pod, the operator sets `LLAMAFT_CR_NAME` / `LLAMAFT_CR_NAMESPACE` and runs the trainer under a
ServiceAccount that may only patch `llamafinetunes/status` in its namespace. The reporter sends a
JSON merge patch at most every `LLAMAFT_PROGRESS_INTERVAL` seconds (default 30). A failed patch is
logged and never stops training: progress is a convenience, the checkpoint is the truth.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class StatusReporter:
    def __init__(self, *, interval: float | None = None) -> None:
        self.name = os.environ.get("LLAMAFT_CR_NAME")
        self.namespace = os.environ.get("LLAMAFT_CR_NAMESPACE")
        self.interval = (
            interval
            if interval is not None
            else float(os.environ.get("LLAMAFT_PROGRESS_INTERVAL", "30"))
        )
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        default_api = f"https://{host}:{port}" if host else None
        self.api = os.environ.get("LLAMAFT_KUBE_API", default_api)
        self.token_path = Path(os.environ.get("LLAMAFT_KUBE_TOKEN_PATH", SA_DIR / "token"))
        self.ca_path = Path(os.environ.get("LLAMAFT_KUBE_CA", SA_DIR / "ca.crt"))
        # None, not 0.0: the monotonic clock starts near 0 at boot, so on a node up for less
        # than `interval` seconds a 0.0 would hold back the first report.
        self._last: float | None = None
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return bool(self.name and self.namespace and self.api)

    def report(self, progress: dict[str, Any], *, force: bool = False) -> bool:
        """Send `progress` (camelCase fields of status.progress) if due; True when sent."""
        if not self.enabled:
            return False
        now = time.monotonic()
        if not force and self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        url = (
            f"{self.api}/apis/llamaft.io/v1alpha1/namespaces/{self.namespace}"
            f"/llamafinetunes/{self.name}/status"
        )
        body = json.dumps({"status": {"progress": progress}}).encode()
        request = urllib.request.Request(url, data=body, method="PATCH")
        request.add_header("Content-Type", "application/merge-patch+json")
        try:
            token = self.token_path.read_text().strip()
            request.add_header("Authorization", f"Bearer {token}")
        except OSError:
            pass
        context = None
        if url.startswith("https://"):
            context = ssl.create_default_context(
                cafile=str(self.ca_path) if self.ca_path.is_file() else None
            )
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                response.read()
        except Exception as err:
            self.failed += 1
            log.warning("status.progress patch failed (training continues): %s", err)
            return False
        self.sent += 1
        return True
