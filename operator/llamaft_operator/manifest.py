"""Read LlamaFineTune manifests from YAML and report every problem with its field path.

PyYAML follows YAML 1.1, where `2e-4` is a string; Kubernetes (and YAML 1.2) read it as a number.
Our loader resolves such scalars as floats so `learningRate: 2e-4` means the same to `kubectl apply`
and to `llamaft run`.

Pure apart from `load_manifest_file`, which reads one file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llamaft_operator.api import LlamaFineTune


class ManifestError(ValueError):
    """The manifest is invalid; `problems` holds one `path: message` line per error."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source} is not a valid LlamaFineTune:\n  " + "\n  ".join(problems))


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?([0-9][0-9_]*)?\.?[0-9]+([eE][-+]?[0-9]+)$|^[-+]?[0-9]+\.[0-9]*$"),
    list("-+0123456789."),
)


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    return [d for d in docs if isinstance(d, dict)]


def format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "<root>"


def describe_errors(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        # Errors raised inside a model validator have no field of their own; their message
        # already names the fields.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field: not in the LlamaFineTune schema (check its spelling and place)"
        lines.append(f"{format_location(loc)}: {msg}")
    return lines


def parse_manifest(doc: dict[str, Any], source: str = "<manifest>") -> LlamaFineTune:
    try:
        return LlamaFineTune.model_validate(doc)
    except ValidationError as err:
        raise ManifestError(source, describe_errors(err)) from None


def load_manifest_file(path: str | Path) -> LlamaFineTune:
    """The single LlamaFineTune in `path` (other kinds in the file are ignored)."""
    text = Path(path).read_text()
    try:
        docs = load_yaml_documents(text)
    except yaml.YAMLError as err:
        raise ManifestError(str(path), [f"<yaml>: {err}"]) from None
    ours = [d for d in docs if d.get("kind") == "LlamaFineTune"]
    if len(ours) != 1:
        raise ManifestError(
            str(path), [f"<root>: expected exactly one LlamaFineTune document, found {len(ours)}"]
        )
    return parse_manifest(ours[0], str(path))
