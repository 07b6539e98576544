"""The one Hub token reader (`llamaft_trainer.hub_token`) that fetch, models, the data loader and
publish share: the file `$HF_TOKEN_PATH` names, never an env value, errors naming the spec field."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaft_trainer import fetch, models, publish
from llamaft_trainer.errors import BadInputError
from llamaft_trainer.hub_token import read_token, require_token

pytestmark = pytest.mark.unit


def test_optional_token_is_read_from_the_mounted_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")  # never used
    assert read_token("spec.model.tokenSecret") is None
    (tmp_path / "token").write_text("hf_secret\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
    assert read_token("spec.model.tokenSecret") == "hf_secret"
    (tmp_path / "token").write_text("  \n")
    assert read_token("spec.model.tokenSecret") is None


def test_unreadable_token_file_names_the_field_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(BadInputError) as err:
        read_token("spec.dataset.tokenSecret")
    message = str(err.value)
    assert "cannot read the Hub token file" in message and "HF_TOKEN_PATH" in message
    assert "spec.dataset.tokenSecret" in message


def test_required_token_must_be_set_and_not_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    with pytest.raises(BadInputError, match=r"HF_TOKEN_PATH is not set.*write token"):
        require_token("publish.hub.tokenSecret")
    (tmp_path / "token").write_text("")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
    with pytest.raises(BadInputError, match=r"is empty.*publish\.hub\.tokenSecret"):
        require_token("publish.hub.tokenSecret")
    (tmp_path / "token").write_text("hf_write\n")
    assert require_token("publish.hub.tokenSecret") == "hf_write"


def test_every_step_uses_the_one_reader() -> None:
    """fetch, models, data and publish hold no token reader of their own."""
    from llamaft_trainer.data import load

    assert fetch.read_token is read_token
    assert models.read_token is read_token
    assert load.read_token is read_token
    assert publish.require_token is require_token
    for module in (fetch, models, publish, load):
        assert not {"hub_token", "_hub_token"} & set(vars(module)), module.__name__
