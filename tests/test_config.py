"""Typed configs: loading, overrides, error messages, dump and hash."""

from pathlib import Path

import pytest
import yaml

from refsam.config import RefSAMConfig, config_from_dict, load_config, parse_override
from refsam.errors import ConfigError

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, RefSAMConfig)


def test_shipped_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert {"smoke.yaml", "demo-tiny-cpu.yaml"} <= names


def test_override_sets_nested_value(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"lr": 0.001}})
    cfg = load_config(path, ["train.lr=1e-5", "model.tracking=false", "train.run_name=abc"])
    assert cfg.train.lr == pytest.approx(1e-5)
    assert cfg.model.tracking is False
    assert cfg.train.run_name == "abc"


def test_override_list_value(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    cfg = load_config(path, ["eval.sets=[{dataset: ref-davis17, split: valid}]"])
    assert cfg.eval.sets[0].tag == "ref-davis17/valid"


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "train.lrr" in str(info.value)
    assert "unknown key" in str(info.value)


def test_unknown_keys_get_a_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"lrr": 0.1}, "nmae": "x"})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "unknown key 'train.lrr' (did you mean 'train.lr'?)" in str(info.value)
    assert "unknown key 'nmae' (did you mean 'name'?)" in str(info.value)
    listed = write(tmp_path, {"train": {"stages": [{"name": "a", "datasets": [], "stepz": 3}]}})
    with pytest.raises(ConfigError, match=r"did you mean 'train\.stages\.0\.steps'\?"):
        load_config(listed)
    with pytest.raises(ConfigError, match=r"'trian' \(did you mean 'train'\?\)"):
        load_config(write(tmp_path, {}), ["trian.lr=1"])
    with pytest.raises(ConfigError, match=r"'train\.stges' \(did you mean 'train\.stages'\?\)"):
        load_config(write(tmp_path, {}), ["train.stges.0.steps=1"])
    with pytest.raises(ConfigError) as far:
        load_config(write(tmp_path, {"train": {"zzzzzz": 1}}))
    assert "did you mean" not in str(far.value)  # nothing close: no guess


def test_unknown_override_section(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(path, ["trian.lr=1"])


def test_unknown_override_leaf(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(path, ["train.nope=1"])


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"lr": "fast"}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "train.lr" in message and "number" in message and "'fast'" in message


def test_negative_value_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, {"data": {"shard_size": -3}})
    with pytest.raises(ConfigError, match="data.shard_size"):
        load_config(path)


def test_unknown_dataset_name(tmp_path: Path) -> None:
    path = write(tmp_path, {"eval": {"sets": [{"dataset": "kinetics", "split": "val"}]}})
    with pytest.raises(ConfigError, match="unknown dataset 'kinetics'"):
        load_config(path)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/exp.yaml")


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_override_syntax() -> None:
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=x=y") == (["a"], "x=y")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("train..lr=1")


def test_yaml_round_trip_and_stable_hash(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"train": {"lr": 3e-4, "seed": 7}}))
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert again.config_hash() == cfg.config_hash()
    assert len(cfg.config_hash()) == 16
    # key order in the file does not matter; any value does
    reordered = load_config(write(tmp_path, {"train": {"seed": 7, "lr": 3e-4}}))
    assert reordered.config_hash() == cfg.config_hash()
    changed = load_config(write(tmp_path, {"train": {"seed": 8, "lr": 3e-4}}))
    assert changed.config_hash() != cfg.config_hash()


def test_override_reaches_list_entries_by_index() -> None:
    cfg = load_config(
        "configs/demo-tiny-cpu.yaml",
        ["train.stages.1.steps=7", "train.stages.0.expressions_per_clip=2"],
    )
    assert cfg.train.stages[1].steps == 7 and cfg.train.stages[0].expressions_per_clip == 2
    assert cfg.train.stages[0].steps != 7
    for bad, message in [
        ("train.stages.9.steps=1", "'9' is not an index of a 2-entry list"),
        ("train.stages.first.steps=1", "'first' is not an index"),
        ("train.stages.0.bogus=1", "unknown key 'train.stages.0.bogus'"),
        ("train.stages.0.steps=-1", "train.stages.0.steps"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config("configs/demo-tiny-cpu.yaml", [bad])
