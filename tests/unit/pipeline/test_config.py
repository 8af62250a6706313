"""Config parsing and validation errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import (
    ConfigError,
    LabelJobConfig,
    config_from_mapping,
    load_config_file,
    parse_concurrency,
    validate,
)


def _cfg(**kw: object) -> LabelJobConfig:
    base = LabelJobConfig(
        input="s3://b/in", output="s3://b/out", vocab="v.txt", class_names=("cat", "dog")
    )
    return replace(base, **kw)


def test_defaults_validate() -> None:
    validate(_cfg())
    assert _cfg().actor_pool_size is None  # auto: sized from the cluster's GPUs


@pytest.mark.parametrize(("text", "expected"), [("1", (1, 1)), ("2,4", (2, 4)), (" 1 , 3", (1, 3))])
def test_concurrency_parses(text: str, expected: tuple[int, int]) -> None:
    assert parse_concurrency(text) == expected


@pytest.mark.parametrize("text", ["0", "4,2", "a", "1,2,3", ""])
def test_bad_concurrency_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match="--concurrency"):
        parse_concurrency(text)


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"shard_size": 0}, "--shard-size"),
        ({"num_cpus_per_actor": 0}, "--num-cpus-per-actor"),
        ({"num_gpus_per_actor": -0.5}, "--num-gpus-per-actor"),
        ({"actor_threads": 0}, "--actor-threads must be >= 1"),
        ({"actor_threads": -1}, "--actor-threads must be >= 1"),
        ({"max_error_rate": 1.5}, "--max-error-rate"),
        ({"limit": 0}, "--limit"),
        ({"device": "tpu"}, "--device"),
        ({"class_names": ()}, "vocabulary is empty"),
        ({"output": "s3://b/in/labels"}, "inside --input"),
        ({"input": "/data/in/*.jpg", "output": "/data/in/out"}, "inside --input"),
    ],
)
def test_invalid_values_name_the_flag(changes: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        validate(_cfg(**changes))


def test_sibling_prefix_is_not_inside_input() -> None:
    validate(_cfg(input="s3://b/in", output="s3://b/in-labels"))


def test_mapping_accepts_kebab_keys_and_rejects_unknown() -> None:
    cfg = config_from_mapping({"input": "a", "output": "b", "vocab": "v", "batch-size": 4})
    assert cfg.batch_size == 4
    with pytest.raises(ConfigError, match="unknown config keys"):
        config_from_mapping({"input": "a", "output": "b", "vocab": "v", "batchsize": 4})
    with pytest.raises(ConfigError, match="--vocab"):
        config_from_mapping({"input": "a", "output": "b"})


def test_config_files_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"batch_size": 8}))
    (tmp_path / "c.yaml").write_text("batch-size: 8\nconcurrency: '1,2'\n")
    assert load_config_file(str(tmp_path / "c.json")) == {"batch_size": 8}
    assert load_config_file(str(tmp_path / "c.yaml"))["concurrency"] == "1,2"
    (tmp_path / "bad.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(str(tmp_path / "missing.json"))


def test_to_dict_is_json_serialisable() -> None:
    d = _cfg().to_dict()
    assert json.loads(json.dumps(d))["class_names"] == ["cat", "dog"]


def test_to_dict_redacts_credentials_in_uris() -> None:
    d = _cfg(checkpoint="https://user:secret@host/m.safetensors?token=abc").to_dict()
    assert d["checkpoint"] == "https://host/m.safetensors"
    assert d["input"] == "s3://b/in"
