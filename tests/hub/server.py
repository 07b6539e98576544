"""A Hub-compatible HTTP server for tests: the real `huggingface_hub` client talks to it.

Why it exists: no real Hugging Face Hub can run here (no network, and the Hub is not open source),
yet `llamaft publish` must be tested with the real client, including its failure paths. So this
server implements exactly the endpoints that `huggingface_hub` 2.4 calls for what llamaft does, with
the request and response shapes read from the client's source (`hf_api.py`, `_commit_api.py`,
`file_download.py`, `utils/_http.py`), and nothing else:

| client call                       | endpoint                                                   |
|-----------------------------------|------------------------------------------------------------|
| `whoami`                          | `GET  /api/whoami-v2`                                      |
| `create_repo`                     | `POST /api/repos/create` (409 when it exists)              |
| `model_info` / `repo_info`        | `GET  /api/models/{repo}[/revision/{rev}]`                 |
| `list_repo_refs`                  | `GET  /api/models/{repo}/refs`                             |
| `create_branch`                   | `POST /api/models/{repo}/branch/{branch}`                  |
| `create_commit` (README check)    | `POST /api/validate-yaml`                                  |
| `create_commit` (upload modes)    | `POST /api/models/{repo}/preupload/{rev}`                  |
| `create_commit`                   | `POST /api/models/{repo}/commit/{rev}` (NDJSON)            |
| `list_repo_tree`                  | `GET  /api/models/{repo}/tree/{rev}[/{path}]`              |
| `list_repo_commits`               | `GET  /api/models/{repo}/commits/{rev}`                    |
| `hf_hub_download`                 | `HEAD/GET /{repo}/resolve/{rev}/{path}` (ETag, X-Repo-Commit)|
| `dataset_info` / `repo_info`      | `GET  /api/datasets/{repo}[/revision/{rev}]`               |
| `list_repo_tree` (dataset)        | `GET  /api/datasets/{repo}/tree/{rev}[/{path}]`            |
| `hf_hub_download` (dataset)       | `HEAD/GET /datasets/{repo}/resolve/{rev}/{path}`           |

Dataset repositories are what `datasets.load_dataset` 5.2 reads for a JSONL or Parquet repo (it
asks for no `paths-info` and no byte ranges, so neither is here). Tests seed them with
`HubServer.create_dataset` / `commit_files`; they live beside the models under the key
`datasets/<owner>/<name>`.

**No LFS/Xet.** Preupload answers `uploadMode: "regular"` for every file, so the client sends all
content base64-encoded inside the NDJSON commit. With `hf_xet` installed (it is), an `"lfs"` answer
would make the client speak the Xet CAS protocol, a separate storage service; "regular" keeps this
server small while exercising the same `create_commit` code path up to the upload transport.
Preupload also returns each existing file's git blob id as `oid`, as the Hub does, so the client's
own "file unchanged" skipping works.

Repositories live in memory as commit graphs (oid -> files dict, parent, title, message) with
branches pointing at commits, so tests can assert exactly how many commits a publish made.

Auth: `Authorization: Bearer <token>` must name a configured token (401 otherwise, with the Hub's
`X-Error-Message: Invalid credentials in Authorization header`); a `read` token on a write endpoint
gets 403. As on the Hub, a request without a token may read a public, ungated repository; for a
private one it gets 401 `RepoNotFound`, for a gated one 401 `GatedRepo`.

Fault injection per endpoint name (`create_repo`, `model_info`, `refs`, `branch`, `validate_yaml`,
`preupload`, `commit`, `tree`, `commits`, `resolve`, `whoami`): answer an HTTP status N times
(500, 429 with `Retry-After`, 401, ...), or drop the connection without a response, either before
handling the request or (`after=True`) after applying it -- the "commit landed but the response was
lost" case.

Stdlib only (`http.server`), so it runs in a thread of the test process without an event loop.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
WRITE_ENDPOINTS = frozenset({"create_repo", "branch", "preupload", "commit"})
DATASETS = "datasets/"  # key prefix of dataset repositories


def git_blob_id(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    gated: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a commit oid (full or 7+ char prefix) -> its commit."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if len(revision) >= 7:
            matches = [c for oid, c in self.commits.items() if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def history(self, revision: str = "main") -> list[Commit]:
        """Commits reachable from `revision`, newest first."""
        out: list[Commit] = []
        commit = self.resolve(revision)
        while commit is not None:
            out.append(commit)
            commit = self.commits[commit.parent] if commit.parent else None
        return out


@dataclass
class Fault:
    """What to do instead of (or after) handling the next `times` requests to an endpoint."""

    status: int | None = None
    times: int = 1
    retry_after: int | None = None
    drop: bool = False
    after: bool = False  # apply the request first, then drop the connection or send `status`


class HubState:
    """Repositories, tokens, faults and a request log, shared by the handler threads."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = dict(tokens)
        self.repos: dict[str, Repo] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.requests: list[tuple[str, str, str, int]] = []  # method, endpoint, path, status
        self.lock = threading.RLock()
        self._counter = itertools.count(1)

    def next_oid(self, seed: str) -> str:
        return hashlib.sha1(f"{next(self._counter)}:{seed}".encode()).hexdigest()

    def take_fault(self, endpoint: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(endpoint, [])
            if not queue:
                return None
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0:
                queue.pop(0)
            return fault

    def create_repo(self, repo_id: str, private: bool, gated: bool = False) -> Repo:
        repo = Repo(repo_id=repo_id, private=private, gated=gated)
        now = _now()
        initial = Commit(
            oid=self.next_oid(repo_id),
            parent=None,
            title="initial commit",
            message="",
            author="system",
            date=now,
            files={".gitattributes": GITATTRIBUTES},
        )
        repo.commits[initial.oid] = initial
        repo.branches["main"] = initial.oid
        self.repos[repo_id] = repo
        return repo


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubError(Exception):
    """An error answer: status, Hub error code header and message."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class _DroppedError(Exception):
    """The connection was closed on purpose; no response is written."""


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real Hub (the client pools connections)
    server: HubHTTPServer

    # --- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        endpoint, handler, args = self._route(parts)
        status = 0
        try:
            fault = state.take_fault(endpoint) if endpoint else None
            if fault and not fault.after:
                self._apply_fault(fault)
            if handler is None:
                raise HubError(404, f"no route for {self.command} {url.path}")
            repo_key = args[0] if args and endpoint not in ("whoami", "create_repo") else None
            self._authorize(endpoint, repo_key)
            status, payload, headers = handler(*args, body=body, query=query)
            if fault and fault.after:
                self._apply_fault(fault)
            self._send(status, payload, headers)
        except HubError as err:
            status = err.status
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.status == 429 and err.code == "retry-after":
                headers = {"Retry-After": err.message}
            self._send(err.status, {"error": err.message}, headers)
        except _DroppedError:
            status = -1
        finally:
            with state.lock:
                state.requests.append((self.command, endpoint, url.path, status))

    def _apply_fault(self, fault: Fault) -> None:
        if fault.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            raise _DroppedError
        assert fault.status is not None
        if fault.status == 429 and fault.retry_after is not None:
            raise HubError(429, str(fault.retry_after), "retry-after")
        raise HubError(fault.status, f"injected {fault.status}")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(payload, bytes):
            data, ctype = payload, "application/octet-stream"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _authorize(self, endpoint: str, repo_key: str | None) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not token and repo_key is not None and endpoint not in WRITE_ENDPOINTS:
            repo = self.server.state.repos.get(repo_key)
            if repo is not None and repo.gated:
                raise HubError(
                    401,
                    f"Access to {repo.repo_id} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in.",
                    "GatedRepo",
                )
            if repo is None or repo.private:
                raise HubError(401, "Repository Not Found", "RepoNotFound")
            return  # a public repository: anyone may read it
        scope = self.server.state.tokens.get(token)
        if scope is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        if endpoint in WRITE_ENDPOINTS and scope != "write":
            raise HubError(403, "You don't have the rights to write to this repository")

    def _route(self, parts: list[str]) -> tuple[str, Any, tuple[Any, ...]]:
        method = self.command
        if parts == ["api", "whoami-v2"] and method == "GET":
            return "whoami", self._whoami, ()
        if parts == ["api", "validate-yaml"] and method == "POST":
            return "validate_yaml", self._validate_yaml, ()
        if parts == ["api", "repos", "create"] and method == "POST":
            return "create_repo", self._create_repo, ()
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if not rest and method == "GET":
                return "model_info", self._model_info, (repo_id, "main")
            if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                return "model_info", self._model_info, (repo_id, rest[1])
            if rest == ["refs"] and method == "GET":
                return "refs", self._refs, (repo_id,)
            if len(rest) == 2 and rest[0] == "branch" and method == "POST":
                return "branch", self._branch, (repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                return "preupload", self._preupload, (repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                return "commit", self._commit, (repo_id, rest[1])
            if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                return "tree", self._tree, (repo_id, rest[1], "/".join(rest[2:]))
            if len(rest) == 2 and rest[0] == "commits" and method == "GET":
                return "commits", self._commits, (repo_id, rest[1])
        if len(parts) >= 4 and parts[:2] == ["api", "datasets"]:
            key, rest = f"{DATASETS}{parts[2]}/{parts[3]}", parts[4:]
            if not rest and method == "GET":
                return "dataset_info", self._model_info, (key, "main")
            if len(rest) >= 2 and rest[0] == "revision" and method == "GET":
                return "dataset_info", self._model_info, (key, "/".join(rest[1:]))
            if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                return "tree", self._tree, (key, rest[1], "/".join(rest[2:]))
        dataset_file = len(parts) >= 6 and parts[0] == "datasets" and parts[3] == "resolve"
        if dataset_file and method in ("GET", "HEAD"):
            key = f"{DATASETS}{parts[1]}/{parts[2]}"
            return "resolve", self._resolve, (key, parts[4], "/".join(parts[5:]))
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return (
                "resolve",
                self._resolve,
                (f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])),
            )
        return "", None, ()

    # --- helpers ----------------------------------------------------------------------------

    @property
    def _base(self) -> str:
        # The address the client used (pods reach the server through a forwarded port), so the
        # URLs we return match the endpoint huggingface_hub validates them against.
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.server.base_url

    def _repo(self, repo_id: str) -> Repo:
        repo = self.server.state.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # --- endpoints --------------------------------------------------------------------------

    def _whoami(self, *, body: bytes, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        return 200, {"type": "user", "name": "llamaft-test", "orgs": []}, {}

    def _validate_yaml(
        self, *, body: bytes, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        content = json.loads(body)["content"]
        errors = []
        if content.startswith("---"):
            front = content.split("---", 2)[1]
            try:
                meta = yaml.safe_load(front)
                if not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a YAML mapping"})
            except yaml.YAMLError as err:
                errors.append({"message": f"invalid YAML: {err}"})
        if errors:
            return 400, {"errors": errors, "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def _create_repo(
        self, *, body: bytes, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        data = json.loads(body)
        if data.get("type", "model") not in (None, "model"):
            raise HubError(400, "this test server only hosts model repositories")
        repo_id = f"{data['organization']}/{data['name']}"
        state = self.server.state
        with state.lock:
            if repo_id in state.repos:
                # The Hub answers 409 with the repo's url; `create_repo(exist_ok=True)` parses it.
                url = f"{self._base}/{repo_id}"
                return 409, {"error": "You already created this model repo", "url": url}, {}
            state.create_repo(repo_id, private=data.get("visibility", "public") == "private")
        return 200, {"url": f"{self._base}/{repo_id}", "name": repo_id, "id": repo_id}, {}

    def _model_info(
        self, repo_id: str, revision: str, *, body: bytes, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        with self.server.state.lock:
            repo = self._repo(repo_id)
            commit = self._commit_at(repo, revision)
            siblings: list[dict[str, Any]] = [{"rfilename": path} for path in sorted(commit.files)]
            if query.get("blobs"):
                siblings = [
                    {"rfilename": p, "size": len(c), "blobId": git_blob_id(c)}
                    for p, c in sorted(commit.files.items())
                ]
            return (
                200,
                {
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "author": repo.repo_id.split("/")[0],
                    "sha": commit.oid,
                    "private": repo.private,
                    "disabled": False,
                    "gated": "auto" if repo.gated else False,
                    "lastModified": commit.date,
                    "tags": [],
                    "siblings": siblings,
                },
                {},
            )

    def _refs(self, repo_id: str, *, body: bytes, query: dict[str, str]) -> Any:
        with self.server.state.lock:
            repo = self._repo(repo_id)
            branches = [
                {"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                for name, oid in sorted(repo.branches.items())
            ]
        return 200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []}, {}

    def _branch(self, repo_id: str, branch: str, *, body: bytes, query: dict[str, str]) -> Any:
        data = json.loads(body) if body else {}
        with self.server.state.lock:
            repo = self._repo(repo_id)
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            start = self._commit_at(repo, data.get("startingPoint") or "main")
            repo.branches[branch] = start.oid
        return 200, {}, {}

    def _preupload(self, repo_id: str, rev: str, *, body: bytes, query: dict[str, str]) -> Any:
        files = json.loads(body)["files"]
        with self.server.state.lock:
            repo = self._repo(repo_id)
            head = repo.resolve(rev)
            existing = head.files if head else {}
            answer = []
            for f in files:
                entry: dict[str, Any] = {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                }
                if f["path"] in existing:
                    entry["oid"] = git_blob_id(existing[f["path"]])
                answer.append(entry)
        return 200, {"files": answer, "commitOid": head.oid if head else None}, {}

    def _commit(self, repo_id: str, rev: str, *, body: bytes, query: dict[str, str]) -> Any:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first NDJSON line must be the header")
        header = lines[0]["value"]
        state = self.server.state
        with state.lock:
            repo = self._repo(repo_id)
            if rev not in repo.branches:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            head = repo.commits[repo.branches[rev]]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: c for p, c in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unsupported commit operation {key!r} (no LFS here)")
            commit = Commit(
                oid=state.next_oid(repo_id + header["summary"]),
                parent=head.oid,
                title=header["summary"],
                message=header.get("description", ""),
                author="llamaft-test",
                date=_now(),
                files=files,
            )
            repo.commits[commit.oid] = commit
            repo.branches[rev] = commit.oid
        url = f"{self._base}/{repo_id}/commit/{commit.oid}"
        return 200, {"success": True, "commitOid": commit.oid, "commitUrl": url}, {}

    def _tree(
        self, repo_id: str, rev: str, path: str, *, body: bytes, query: dict[str, str]
    ) -> Any:
        recursive = query.get("recursive", "false").lower() == "true"
        with self.server.state.lock:
            commit = self._commit_at(self._repo(repo_id), rev)
            prefix = f"{path.strip('/')}/" if path.strip("/") else ""
            entries: dict[str, dict[str, Any]] = {}
            for file_path, content in sorted(commit.files.items()):
                if not file_path.startswith(prefix):
                    continue
                rel = file_path[len(prefix) :].split("/")
                for depth in range(1, len(rel)):  # folders on the way
                    folder = prefix + "/".join(rel[:depth])
                    if recursive or depth == 1:
                        oid = hashlib.sha1(folder.encode(), usedforsecurity=False).hexdigest()
                        entries[folder] = {"type": "directory", "oid": oid, "path": folder}
                if recursive or len(rel) == 1:
                    entries[file_path] = {
                        "type": "file",
                        "oid": git_blob_id(content),
                        "size": len(content),
                        "path": file_path,
                    }
            if prefix and not entries:
                raise HubError(404, f"{path} does not exist", "EntryNotFound")
        return 200, [entries[k] for k in sorted(entries)], {}

    def _commits(self, repo_id: str, rev: str, *, body: bytes, query: dict[str, str]) -> Any:
        with self.server.state.lock:
            repo = self._repo(repo_id)
            self._commit_at(repo, rev)
            items = [
                {
                    "id": c.oid,
                    "authors": [{"user": c.author}],
                    "date": c.date,
                    "title": c.title,
                    "message": c.message,
                }
                for c in repo.history(rev)
            ]
        return 200, items, {}

    def _resolve(
        self, repo_id: str, rev: str, path: str, *, body: bytes, query: dict[str, str]
    ) -> Any:
        with self.server.state.lock:
            commit = self._commit_at(self._repo(repo_id), rev)
            if path not in commit.files:
                raise HubError(404, "Entry not found", "EntryNotFound")
            content = commit.files[path]
        headers = {"ETag": f'"{git_blob_id(content)}"', "X-Repo-Commit": commit.oid}
        return 200, content, headers


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: HubState) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.state = state
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}"


class HubServer:
    """The test Hub on a random loopback port. Use as a context manager or start()/stop()."""

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.state = HubState(tokens or {})
        self._httpd = HubHTTPServer(self.state)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return self._httpd.base_url

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test helpers -----------------------------------------------------------------------

    def add_token(self, token: str, scope: str = "write") -> None:
        self.state.tokens[token] = scope

    def fail(
        self,
        endpoint: str,
        status: int,
        *,
        times: int = 1,
        retry_after: int | None = None,
        after: bool = False,
    ) -> None:
        """Answer the next `times` requests to `endpoint` with `status` (after applying them
        when `after`)."""
        fault = Fault(status=status, times=times, retry_after=retry_after, after=after)
        self.state.faults.setdefault(endpoint, []).append(fault)

    def drop(self, endpoint: str, *, times: int = 1, after: bool = True) -> None:
        """Close the connection without a response; by default after applying the request."""
        fault = Fault(drop=True, times=times, after=after)
        self.state.faults.setdefault(endpoint, []).append(fault)

    def repo(self, repo_id: str) -> Repo:
        return self.state.repos[repo_id]

    def create_repo(self, repo_id: str, *, private: bool = True) -> Repo:
        with self.state.lock:
            return self.state.create_repo(repo_id, private)

    def create_dataset(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        private: bool = False,
        gated: bool = False,
        title: str = "upload",
    ) -> str:
        """A dataset repository with `files` committed on main; returns that commit's oid."""
        with self.state.lock:
            self.state.create_repo(DATASETS + repo_id, private, gated).repo_id = repo_id
        return self.commit_files(repo_id, files, title=title, dataset=True)

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        title: str = "upload",
        dataset: bool = False,
        branch: str = "main",
    ) -> str:
        """Commit `files` (added or replaced) on `branch`; returns the new commit's oid."""
        with self.state.lock:
            repo = self.repo(DATASETS + repo_id if dataset else repo_id)
            head = repo.commits[repo.branches[branch]]
            commit = Commit(
                oid=self.state.next_oid(repo_id + title),
                parent=head.oid,
                title=title,
                message="",
                author="llamaft-test",
                date=_now(),
                files={**head.files, **files},
            )
            repo.commits[commit.oid] = commit
            repo.branches[branch] = commit.oid
            return commit.oid

    def requests_to(self, endpoint: str) -> list[tuple[str, str, str, int]]:
        return [r for r in self.state.requests if r[1] == endpoint]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.repo(repo_id).resolve(revision)
        return dict(commit.files) if commit else {}

    def iter_commits(self, repo_id: str, revision: str = "main") -> Iterator[Commit]:
        yield from self.repo(repo_id).history(revision)
