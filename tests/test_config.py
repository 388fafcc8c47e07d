"""Config precedence (defaults < TOML < env < flags) and one-line errors for bad keys/values."""

from __future__ import annotations

from pathlib import Path

import pytest

from autolabel.config import Config, config_as_toml, load_config
from autolabel.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "autolabel.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    cfg = load_config(environ={})
    assert cfg.subject.model == "gemma-3-270m"
    assert cfg.subject.layer == 6
    assert cfg.corpus.source == "wikipedia-sample"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[subject]\nlayer = 3\nmodel = "m-file"\n[corpus]\nwindow = 32\n')
    env = {"AUTOLABEL_SUBJECT__LAYER": "4", "AUTOLABEL_CORPUS__SEED": "7"}
    cfg = load_config(path, {"subject.layer": 5, "corpus.window": None}, environ=env)
    assert cfg.subject.layer == 5  # flag beats env beats file
    assert cfg.subject.model == "m-file"  # file beats default
    assert cfg.corpus.seed == 7  # env beats default
    assert cfg.corpus.window == 32  # a flag left unset (None) does not hide the file


def test_env_db_and_json_values() -> None:
    env = {"AUTOLABEL_DB": "x.db", "AUTOLABEL_EXPLAIN__EXPLAINERS": '["tokens"]'}
    cfg = load_config(environ=env)
    assert cfg.db == "x.db"
    assert cfg.explain.explainers == ["tokens"]


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[subject]\nlayr = 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    msg = str(exc.value)
    assert "subject.layr" in msg and str(path) in msg and "\n" not in msg


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[nonsense]\na = 1\n")
    with pytest.raises(ConfigError, match="nonsense"):
        load_config(path, environ={})


def test_bad_value_names_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[subject]\nlayer = "six"\n')
    with pytest.raises(ConfigError, match=r"subject\.layer.*six"):
        load_config(path, environ={})


def test_out_of_range_value() -> None:
    with pytest.raises(ConfigError, match="corpus.test_fraction"):
        load_config(environ={"AUTOLABEL_CORPUS__TEST_FRACTION": "1.5"})


def test_unknown_env_key() -> None:
    with pytest.raises(ConfigError, match="subject.layr"):
        load_config(environ={"AUTOLABEL_SUBJECT__LAYR": "3"})


def test_reserved_env_ignored() -> None:
    cfg = load_config(environ={"AUTOLABEL_DEBUG": "1", "AUTOLABEL_CACHE_DIR": "/tmp/x"})
    assert cfg == Config()


def test_missing_and_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[subject\n"), environ={})


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(environ={"AUTOLABEL_LLM__PRICES": '{"gpt": [1.0, 2.0]}'})
    again = load_config(write(tmp_path, config_as_toml(cfg)), environ={})
    assert again == cfg
