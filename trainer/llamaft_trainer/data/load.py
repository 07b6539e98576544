"""Find a dataset file from its `DataSource` and read its rows, keeping every bad row's location.

Sources: `local.path` (absolute; the caller resolves it against the manifest), `pvc` under
`$LLAMAFT_DATA_ROOT` (default `/data`, where the Job mounts claims as `/data/<claimName>`),
`configMap` under `$LLAMAFT_CONFIGMAP_ROOT` (default `/config`, mounted as `/config/<name>/<key>`),
`url` (downloaded once into `$LLAMAFT_CACHE_DIR/data`, sha256-checked when the spec gives one) and
`hub` (the `datasets` library, at the pinned revision, token read from `$HF_TOKEN_PATH`).

File types by extension, else sniffed from the content: JSONL (`.jsonl`, `.ndjson`; read line by
line here so each bad line is reported with its number), JSON (a top-level array; a `.json` file
that is really JSONL is read as JSONL), CSV (`.csv`; `.tsv` tab-separated) and Parquet.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from llamaft_operator.api import DataSource
from llamaft_trainer.data.types import (
    NOT_JSON,
    NOT_OBJECT,
    NOT_UTF8,
    WRONG_TYPE,
    LoadedRows,
    RowProblem,
)
from llamaft_trainer.errors import BadInputError
from llamaft_trainer.hub_token import TOKEN_PATH_ENV as HF_TOKEN_PATH_ENV
from llamaft_trainer.hub_token import read_token

DATA_ROOT_ENV = "LLAMAFT_DATA_ROOT"
CONFIGMAP_ROOT_ENV = "LLAMAFT_CONFIGMAP_ROOT"
CACHE_DIR_ENV = "LLAMAFT_CACHE_DIR"
DATASET_TOKEN_FIELD = "spec.dataset.tokenSecret"
HUB_PREFIX = "hub:"
DOWNLOAD_TIMEOUT_S = 60.0


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "llamaft"
    return Path(os.environ.get(CACHE_DIR_ENV, default)) / "data"


def resolve_source(source: DataSource) -> Path | str:
    """The local file a source names (downloading a URL first), or `"hub:<id>"` for the Hub."""
    if source.local is not None:
        return Path(source.local.path)
    if source.pvc is not None:
        root = Path(os.environ.get(DATA_ROOT_ENV, "/data"))
        return root / source.pvc.claim_name / source.pvc.path
    if source.config_map is not None:
        root = Path(os.environ.get(CONFIGMAP_ROOT_ENV, "/config"))
        return root / source.config_map.name / source.config_map.key
    if source.url is not None:
        return download(source.url.url, source.url.sha256)
    if source.hub is not None:
        return HUB_PREFIX + source.hub.id
    raise AssertionError("DataSource is validated to have exactly one source")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, sha256: str | None = None) -> Path:
    """Download `url` into the cache (atomically) and check its sha256 when one is given.

    A cached copy is reused only when a sha256 pins its content; without one the URL may have
    changed since, so it is fetched again.
    """
    name = Path(urllib.request.url2pathname(url.split("?", 1)[0])).name or "download"
    target = cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    if sha256 is not None and target.exists() and _sha256(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r,
        ):
            for block in iter(lambda: r.read(1 << 20), b""):
                out.write(block)
        actual = _sha256(Path(tmp_name))
        if sha256 is not None and actual != sha256:
            raise BadInputError(
                f"the file at {url} has sha256 {actual}, not the {sha256} the dataset spec "
                "expects: fix source.url.sha256 or the file"
            )
        os.replace(tmp_name, target)
    except (urllib.error.URLError, OSError) as err:
        # Network trouble may be transient, but a 4xx will not heal: either way say which URL.
        raise BadInputError(f"cannot download the dataset from {url}: {err}") from err
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def read_source(source: DataSource) -> LoadedRows:
    """All rows of a source, with unreadable rows listed as problems instead of raised."""
    if source.hub is not None:
        hub = source.hub
        return read_hub(hub.id, revision=hub.revision, split=hub.split, config=hub.config)
    resolved = resolve_source(source)
    assert isinstance(resolved, Path)
    return read_file(resolved)


def load_rows(source: DataSource) -> list[tuple[int, dict[str, Any]]]:
    """All rows of a source as (line or row number, row); the first unreadable row raises."""
    loaded = read_source(source)
    if loaded.problems:
        raise BadInputError(f"{loaded.origin}: {loaded.problems[0]}")
    return loaded.rows


def read_file(path: Path) -> LoadedRows:
    """Read a local JSONL/JSON/CSV/TSV/Parquet file; see the module docstring for detection."""
    if not path.is_file():
        raise BadInputError(
            f"dataset file {path} does not exist (or is not a file): check the path"
        )
    kind = _kind(path)
    if kind == "parquet":
        return _read_parquet(path)
    data = path.read_bytes()
    if kind == "csv":
        return _read_csv(data, origin=str(path), delimiter="\t" if path.suffix == ".tsv" else ",")
    if kind == "json":
        whole = _read_json_array(data, origin=str(path))
        if whole is not None:
            return whole
    return read_jsonl_bytes(data, origin=str(path))


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    # No telling extension (e.g. a ConfigMap key): sniff.
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    stripped = head.lstrip()
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{") or not stripped:
        return "jsonl"
    return "csv"


def read_jsonl_bytes(data: bytes, origin: str = "<bytes>") -> LoadedRows:
    """One JSON object per line; blank lines are skipped, line numbers are 1-based."""
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[RowProblem] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(
                RowProblem(number, NOT_UTF8, f"byte {err.start} is not UTF-8: re-encode the file")
            )
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(
                RowProblem(
                    number,
                    NOT_JSON,
                    f"not valid JSON ({err.msg}, column "
                    f"{err.colno}): each line must be one JSON object",
                )
            )
            continue
        if not isinstance(value, dict):
            problems.append(
                RowProblem(
                    number, NOT_OBJECT, f"a JSON {type(value).__name__}, not an object with fields"
                )
            )
            continue
        rows.append((number, value))
    return LoadedRows(rows, problems, "line", origin)


def _read_json_array(data: bytes, origin: str) -> LoadedRows | None:
    """A JSON array of objects, numbered by row; None when the file is JSONL after all."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise BadInputError(f"{origin}: line {line} is not UTF-8: re-encode the file") from err
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg.startswith("Extra data"):
            return None  # several JSON values: JSON lines named .json
        raise BadInputError(
            f"{origin}: not valid JSON at line {err.lineno} column {err.colno} ({err.msg})"
        ) from err
    if isinstance(value, dict):
        return None if text.count("\n") > 1 else LoadedRows([(1, value)], [], "row", origin)
    if not isinstance(value, list):
        raise BadInputError(
            f"{origin}: expected a JSON array of objects, got {type(value).__name__}"
        )
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[RowProblem] = []
    for number, item in enumerate(value, start=1):
        if isinstance(item, dict):
            rows.append((number, item))
        else:
            problems.append(
                RowProblem(
                    number, NOT_OBJECT, f"a JSON {type(item).__name__}, not an object", unit="row"
                )
            )
    return LoadedRows(rows, problems, "row", origin)


def _read_csv(data: bytes, origin: str, delimiter: str = ",") -> LoadedRows:
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad row is reported by its
    # line instead of the whole file failing to decode.
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[RowProblem] = []
    try:
        if reader.fieldnames is None:
            return LoadedRows([], [], "line", origin)
        start = reader.line_num + 1
        for record in reader:
            bad = [k for k, v in record.items() if isinstance(v, str) and _has_surrogates(v)]
            if bad:
                problems.append(
                    RowProblem(start, NOT_UTF8, "not UTF-8: re-encode the file", field=str(bad[0]))
                )
            elif None in record:
                problems.append(
                    RowProblem(
                        start,
                        WRONG_TYPE,
                        f"{len(record[None])} more cells than the header has columns",
                    )
                )
            else:
                rows.append((start, {k: v for k, v in record.items() if v is not None}))
            start = reader.line_num + 1
    except csv.Error as err:
        raise BadInputError(f"{origin}: line {reader.line_num}: not valid CSV ({err})") from err
    return LoadedRows(rows, problems, "line", origin)


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _read_parquet(path: Path) -> LoadedRows:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        records: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise BadInputError(f"{path}: not a readable Parquet file ({err})") from err
    return LoadedRows(list(enumerate(records, start=1)), [], "row", str(path))


def read_hub(
    dataset_id: str, *, revision: str, split: str = "train", config: str | None = None
) -> LoadedRows:
    """A Hub dataset split at a pinned revision, rows numbered from 1.

    The endpoint is `$HF_ENDPOINT` (a self-hosted Hub mirror), read by huggingface_hub at import.
    """
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    origin = f"hub:{dataset_id}@{revision}[{split}]"
    token = read_token(DATASET_TOKEN_FIELD)
    try:
        ds = datasets.load_dataset(
            dataset_id, name=config, revision=revision, split=split, token=token
        )
    except DatasetNotFoundError as err:  # no such repo or revision, private, or gated
        raise BadInputError(_no_access(dataset_id, revision, origin, err, token)) from err
    except Exception as err:  # datasets raises many types: bad split, unreadable files...
        status = _http_status(err)
        if status in (401, 403):
            raise BadInputError(
                f"spec.dataset: the Hub refused the read token in ${HF_TOKEN_PATH_ENV} for "
                f"{origin} (HTTP {status}): set spec.dataset.tokenSecret to a Secret holding a "
                "valid Hub read token that has access to the dataset"
            ) from err
        raise BadInputError(
            f"spec.dataset: cannot load {origin}: {err}. Check the id, revision and split"
        ) from err
    rows = [(i, dict(record)) for i, record in enumerate(ds, start=1)]
    return LoadedRows(rows, [], "row", origin)


def _http_status(err: BaseException | None) -> int | None:
    """The HTTP status of a Hub error anywhere in the exception's chain."""
    from huggingface_hub.errors import HfHubHTTPError

    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, HfHubHTTPError) and err.response is not None:
            return int(err.response.status_code)
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _no_access(
    dataset_id: str, revision: str, origin: str, err: Exception, token: str | None
) -> str:
    text = str(err).rstrip(".")
    if "Revision" in text and "doesn't exist" in text:
        return (
            f"spec.dataset: cannot read {origin}: the Hub dataset {dataset_id} has no revision "
            f"{revision!r}; pin a commit SHA, tag or branch it has"
        )
    why = (
        f"the read token in ${HF_TOKEN_PATH_ENV} was not enough"
        if token
        else "no Hub token was given"
    )
    return (
        f"spec.dataset: cannot read {origin} ({text}; {why}). If the dataset is private or gated, "
        "set spec.dataset.tokenSecret to a Secret holding a Hub read token that has access (for "
        "a gated dataset, accept its terms on the Hub first); locally, point "
        f"{HF_TOKEN_PATH_ENV} at a file holding the token"
    )
