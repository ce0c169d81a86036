from pathlib import Path

import pytest

from pipeline.core.config import ConfigError
from pipeline.core.params import load_params, parse_overrides


def test_defaults_load_from_params_yaml() -> None:
    params = load_params()
    assert params.augment.factor == 8


def test_missing_explicit_params_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")


def test_bad_value_names_key_and_allowed_range() -> None:
    with pytest.raises(ConfigError) as err:
        load_params(overrides={"augment.factor": 0})
    message = str(err.value)
    assert "augment.factor = 0" in message
    assert ">= 1" in message and "<= 1000" in message


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"augment\.factr"):
        load_params(overrides={"augment.factr": 3})


def test_split_needs_exactly_one_train_size() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        load_params(overrides={"split.train_fraction": 0.5})
    params = load_params(overrides={"split.train_fraction": 0.5, "split.train_per_class": None})
    assert params.split.train_fraction == 0.5


def test_local_params_file_overlays_defaults(in_tmp: Path) -> None:
    (in_tmp / "params.yaml").write_text("augment:\n  factor: 3\n")
    params = load_params()
    assert params.augment.factor == 3
    assert params.detect.size == 160  # untouched sections keep the defaults


def test_overrides_parse_yaml_scalars() -> None:
    assert parse_overrides(["a.b=3", "a.c=null", "a.d=true", "a.e=x"]) == {
        "a.b": 3, "a.c": None, "a.d": True, "a.e": "x"
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_overrides(["novalue"])
