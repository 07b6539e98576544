"""Loading rows from every file type and every source kind, with bad rows located."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaft_operator.api import DataSource
from llamaft_trainer.data import load_rows, read_file, resolve_source
from llamaft_trainer.data.load import read_source
from llamaft_trainer.errors import BadInputError

pytestmark = pytest.mark.unit

ROWS = [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}]


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_rows_are_numbered_by_line_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    loaded = read_file(path)
    assert loaded.rows == [(1, ROWS[0]), (3, ROWS[1])]
    assert loaded.unit == "line" and not loaded.problems


def test_json_array_is_numbered_by_row(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([*ROWS, "not an object"]))
    loaded = read_file(path)
    assert loaded.rows == [(1, ROWS[0]), (2, ROWS[1])]
    assert [(p.line, p.kind, p.unit) for p in loaded.problems] == [(3, "not-object", "row")]


def test_json_file_that_is_really_jsonl(tmp_path: Path) -> None:
    loaded = read_file(write_jsonl(tmp_path / "d.json", ROWS))
    assert loaded.rows == [(1, ROWS[0]), (2, ROWS[1])]


@pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".tsv", "\t")])
def test_csv_and_tsv(tmp_path: Path, suffix: str, sep: str) -> None:
    path = tmp_path / f"d{suffix}"
    path.write_text(f"prompt{sep}response\na{sep}b\nc{sep}d\n")
    assert read_file(path).rows == [(2, ROWS[0]), (3, ROWS[1])]


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    loaded = read_file(path)
    assert loaded.rows == [(1, ROWS[0]), (2, ROWS[1])] and loaded.unit == "row"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"prompt": "a", "response": "b"}\n', [(1, ROWS[0])]),  # JSONL
        (b'[{"prompt": "a", "response": "b"}]', [(1, ROWS[0])]),  # JSON array
        (b"prompt,response\na,b\n", [(2, ROWS[0])]),  # CSV
    ],
)
def test_file_type_is_sniffed_without_extension(
    tmp_path: Path, content: bytes, expected: list[tuple[int, dict[str, str]]]
) -> None:
    path = tmp_path / "train"  # a ConfigMap key has no extension
    path.write_bytes(content)
    assert read_file(path).rows == expected


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        read_file(tmp_path / "nope.jsonl")


def test_load_rows_raises_naming_the_first_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{oops\n")
    with pytest.raises(BadInputError, match="line 2: not valid JSON"):
        load_rows(DataSource(local={"path": str(path)}))


def test_pvc_and_configmap_sources_resolve_under_their_mount_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMAFT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("LLAMAFT_CONFIGMAP_ROOT", str(tmp_path / "config"))
    pvc = DataSource(pvc={"claimName": "datasets", "path": "support/train.jsonl"})
    cm = DataSource.model_validate({"configMap": {"name": "quick", "key": "train.jsonl"}})
    assert resolve_source(pvc) == tmp_path / "data/datasets/support/train.jsonl"
    assert resolve_source(cm) == tmp_path / "config/quick/train.jsonl"
    (tmp_path / "config/quick").mkdir(parents=True)
    write_jsonl(tmp_path / "config/quick/train.jsonl", ROWS)
    assert [r for _, r in load_rows(cm)] == ROWS


def test_default_mount_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMAFT_DATA_ROOT", raising=False)
    monkeypatch.delenv("LLAMAFT_CONFIGMAP_ROOT", raising=False)
    assert resolve_source(DataSource(pvc={"claimName": "c", "path": "p.jsonl"})) == Path(
        "/data/c/p.jsonl"
    )
    assert resolve_source(
        DataSource.model_validate({"configMap": {"name": "n", "key": "k"}})
    ) == Path("/config/n/k")


def test_hub_source_resolves_to_a_marker() -> None:
    assert resolve_source(DataSource(hub={"id": "acme/support"})) == "hub:acme/support"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """An http server on loopback serving one JSONL file; yields (url, its bytes)."""
    root = tmp_path / "www"
    root.mkdir()
    body = write_jsonl(root / "train.jsonl", ROWS).read_bytes()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/train.jsonl", body
    finally:
        server.shutdown()
        server.server_close()


def test_url_is_downloaded_to_the_cache_and_checked(
    served: tuple[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, body = served
    monkeypatch.setenv("LLAMAFT_CACHE_DIR", str(tmp_path / "cache"))
    digest = hashlib.sha256(body).hexdigest()
    source = DataSource(url={"url": url, "sha256": digest})
    path = resolve_source(source)
    assert isinstance(path, Path) and path.read_bytes() == body
    assert path.is_relative_to(tmp_path / "cache")
    assert [r for _, r in load_rows(source)] == ROWS


def test_url_with_wrong_sha256_fails_and_leaves_nothing(
    served: tuple[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = served
    monkeypatch.setenv("LLAMAFT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BadInputError, match="sha256"):
        resolve_source(DataSource(url={"url": url, "sha256": "0" * 64}))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_unreachable_url_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAFT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BadInputError, match="cannot download"):
        resolve_source(DataSource(url={"url": "http://127.0.0.1:9/none.jsonl"}))


def test_hub_source_that_cannot_load_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    # No network here: the datasets library fails, and we must say which dataset and what to check.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(BadInputError, match=r"hub:acme/nothing-here@v1\[train\]"):
        read_source(DataSource(hub={"id": "acme/nothing-here", "revision": "v1"}))
