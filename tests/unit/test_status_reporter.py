"""The trainer's status.progress reporter against a real local HTTP server (stdlib)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llamaft_trainer.status_reporter import StatusReporter

pytestmark = pytest.mark.unit


class Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, str, dict[str, str], dict[str, object]]] = []
        self.fail = False


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        self.send_response(500 if self.server.fail else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "token"
    token.write_text("sa-token-123\n")
    monkeypatch.setenv("LLAMAFT_CR_NAME", "support-bot")
    monkeypatch.setenv("LLAMAFT_CR_NAMESPACE", "ml")
    monkeypatch.setenv("LLAMAFT_KUBE_API", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("LLAMAFT_KUBE_TOKEN_PATH", str(token))
    yield server
    server.shutdown()


def test_patches_status_progress_with_a_merge_patch(api: Recorder) -> None:
    reporter = StatusReporter(interval=0)
    assert reporter.report({"step": 3, "totalSteps": 10, "loss": 1.5})
    method, path, headers, body = api.requests[0]
    assert method == "PATCH"
    assert path == "/apis/llamaft.io/v1alpha1/namespaces/ml/llamafinetunes/support-bot/status"
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert headers["Authorization"] == "Bearer sa-token-123"
    assert body == {"status": {"progress": {"step": 3, "totalSteps": 10, "loss": 1.5}}}


def test_throttled_to_the_interval(api: Recorder) -> None:
    reporter = StatusReporter(interval=3600)
    assert reporter.report({"step": 1})
    assert not reporter.report({"step": 2})
    assert reporter.report({"step": 3}, force=True)
    assert [r[3]["status"]["progress"]["step"] for r in api.requests] == [1, 3]  # type: ignore[index]


def test_first_report_is_sent_on_a_node_booted_moments_ago(
    api: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monotonic clock counts from boot; a fresh node's is below the interval."""
    monkeypatch.setattr(time, "monotonic", lambda: 5.0)
    reporter = StatusReporter(interval=30)
    assert reporter.report({"step": 1})
    assert not reporter.report({"step": 2})


def test_a_failing_api_never_raises(api: Recorder) -> None:
    api.fail = True
    reporter = StatusReporter(interval=0)
    assert reporter.report({"step": 1}) is False
    assert reporter.failed == 1


def test_disabled_outside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMAFT_CR_NAME", raising=False)
    assert not StatusReporter(interval=0).enabled
