"""The config mechanism: layering, YAML 1.2 values, type checks, error messages, round trips."""

# String annotations on purpose: the loader must resolve them (get_type_hints), as user modules do.
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from mtm.config import (
    DataConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    format_config,
    load_config,
    save_config,
)
from mtm.errors import ConfigError


@dataclass
class Net:
    width: int = 64
    act: Literal["gelu", "relu"] = "gelu"
    dropout: float = 0.1
    name: str | None = None


@dataclass
class Root:
    data: DataConfig = field(default_factory=DataConfig)
    model: Net = field(default_factory=lambda: Net(width=128))  # a non-default section default
    train: TrainConfig = field(default_factory=TrainConfig)
    extra: Net | None = None
    tags: list[str] = field(default_factory=list)
    scales: tuple[float, ...] = (1.0,)


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------- layering


def test_defaults_only():
    assert load_config(Root) == Root()
    assert load_config(TrainConfig) == TrainConfig()


def test_file_then_overrides_merge_into_section_defaults(tmp_path):
    cfg_file = write(tmp_path, "model:\n  dropout: 0.2\ntrain:\n  lr: 1e-3\n  steps: 500\ndata:\n  path: d.hdf5\n")
    cfg = load_config(Root, cfg_file, ["model.width=256", "train.steps=1000", "train.steps=2000"])
    assert cfg.model == Net(width=256, dropout=0.2)
    assert cfg.train.lr == 1e-3 and cfg.train.steps == 2000  # the last --set wins
    assert cfg.train.batch_size == TrainConfig().batch_size
    assert cfg.data.path == "d.hdf5" and cfg.data.window == 4
    # A section absent from the file keeps its own (non-default) default.
    assert load_config(Root, write(tmp_path, "train: {steps: 5}", "b.yaml")).model.width == 128


def test_json_file(tmp_path):
    cfg = load_config(Root, write(tmp_path, json.dumps({"train": {"betas": [0.8, 0.9], "deterministic": True}}), "c.json"))
    assert cfg.train.betas == (0.8, 0.9) and cfg.train.deterministic is True


def test_empty_file_means_defaults(tmp_path):
    assert load_config(Root, write(tmp_path, "# nothing\n")) == Root()


# ------------------------------------------------------------------------------------------- values


def test_yaml_12_scalars():
    cfg = load_config(
        Root,
        overrides=[
            "train.lr=3e-4",  # a string in PyYAML's YAML 1.1
            "train.steps=1e5",  # an integral float is accepted for an int
            "train.seed=010",  # decimal, not octal
            "train.batch_size=1_024",
            "train.deterministic=true",
            "train.run_dir=yes",  # a string, not a YAML 1.1 boolean
            "train.device=on",
        ],
    )
    t = cfg.train
    assert (t.lr, t.steps, t.seed, t.batch_size, t.deterministic) == (3e-4, 100_000, 10, 1024, True)
    assert isinstance(t.steps, int) and (t.run_dir, t.device) == ("yes", "on")


def test_str_override_takes_the_text_typed():
    cfg = load_config(Root, overrides=["data.path=2024", "train.run_dir=runs/a=b", "model.name=off"])
    assert (cfg.data.path, cfg.train.run_dir, cfg.model.name) == ("2024", "runs/a=b", "off")
    assert load_config(Root, overrides=["data.path="]).data.path == ""
    cfg = load_config(Root, overrides=["data.format=null", "model.name=null"])
    assert cfg.data.format is None and cfg.model.name is None
    assert load_config(Root, overrides=['data.path="x y.hdf5"']).data.path == "x y.hdf5"


def test_sequences_and_dicts(tmp_path):
    cfg = load_config(Root, overrides=["train.betas=[0.9, 0.95]", "tags=[a, b]", "scales=[1, 2.5, 3]"])
    assert cfg.train.betas == (0.9, 0.95) and isinstance(cfg.train.betas, tuple)
    assert cfg.tags == ["a", "b"] and cfg.scales == (1.0, 2.5, 3.0)

    cfg_file = write(tmp_path, "train:\n  loss_weights: {states: 0.5}\n")
    cfg = load_config(Root, cfg_file, ["train.loss_weights.actions=2"])
    assert cfg.train.loss_weights == {"states": 0.5, "actions": 2.0}  # one key added, not replaced
    cfg = load_config(Root, cfg_file, ["train.loss_weights={returns: 0}"])
    assert cfg.train.loss_weights == {"returns": 0.0}  # a whole mapping replaces
    assert load_config(Root, overrides=["train.loss_weights.states=3"]).train.loss_weights == {"states": 3.0}


def test_optional_section_and_section_mapping_override():
    assert load_config(Root, overrides=["extra.width=3"]).extra == Net(width=3)
    cfg = load_config(Root, overrides=["model={act: relu}", "model.dropout=0"])
    assert cfg.model == Net(width=128, act="relu", dropout=0.0)


def test_later_override_repairs_file(tmp_path):
    # Checked once after all layers, so a --set can fix a value the file got wrong.
    cfg = load_config(Root, write(tmp_path, "train: {lr: -1}"), ["train.lr=0.01"])
    assert cfg.train.lr == 0.01


# ------------------------------------------------------------------------------------------- errors


def test_unknown_keys(tmp_path):
    msg = error(Root, write(tmp_path, "train:\n  lrr: 0.1\n"))
    assert msg.startswith(f"{tmp_path / 'cfg.yaml'}: unknown key 'train.lrr' (did you mean 'lr'?)")
    assert "valid keys in 'train': steps, batch_size, lr," in msg
    msg = error(Root, overrides=["modle.width=3"])
    assert msg.startswith("--set: unknown key 'modle' (did you mean 'model'?); valid keys at the top level: data,")
    assert "unknown key 'model.depth'" in error(Root, overrides=["model.depth=3"])


TYPE_ERRORS = [
    ("train.lr=abc", "train.lr: expected float, got 'abc' (str)"),
    ("train.bf16=yes", "train.bf16: expected bool (true or false), got 'yes' (str)"),
    ("train.steps=1.5", "train.steps: expected int, got 1.5"),
    ("train.betas=[0.9]", "train.betas: expected 2 items (tuple[float, float]), got 1"),
    ("tags=[a, [b]]", "tags[1]: expected str, got ['b'] (a list)"),
    ("train.loss_weights.a=x", "train.loss_weights.a: expected float, got 'x' (str)"),
    ("train=3", "train: expected a section (mapping of TrainConfig keys), got 3"),
    ("train.lr.x=1", "'train.lr' is of type float, not a section; cannot set 'train.lr.x'"),
]


@pytest.mark.parametrize("override, message", TYPE_ERRORS)
def test_type_errors(override, message):
    assert error(Root, overrides=[override]) == f"--set: {message}"


def test_literal_lists_choices():
    msg = error(Root, overrides=["train.loss_on=maskd"])
    assert msg == "--set: train.loss_on: expected one of 'all', 'masked', got 'maskd' (str) (did you mean 'masked'?)"


def test_type_error_in_file_names_file(tmp_path):
    msg = error(Root, write(tmp_path, "data:\n  path: 12\n"))
    assert msg == f"{tmp_path / 'cfg.yaml'}: data.path: expected str, got 12; quote it to make it a string"


def test_range_checks_name_their_source(tmp_path):
    cfg_file = write(tmp_path, "data: {window: 0}")
    assert error(Root, cfg_file) == f"{cfg_file}: data.window must be >= 1, got 0"
    assert error(Root, overrides=["train.lr=-1"]) == "--set: train.lr must be > 0, got -1.0"
    ok_file = write(tmp_path, "train: {lr: 1}", "ok.yaml")
    assert error(Root, ok_file, ["train.lr=0"]) == "--set: train.lr must be > 0, got 0.0"


def test_malformed_override():
    assert error(Root, overrides=["train.lr"]) == "--set 'train.lr': expected KEY=VALUE, e.g. --set train.lr=3e-4"
    assert "malformed key 'train..lr'" in error(Root, overrides=["train..lr=1"])
    assert "expected KEY=VALUE" in error(Root, overrides=["=3"])


def test_bad_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert error(Root, missing) == f"{missing}: config file not found"
    assert error(Root, tmp_path) == f"{tmp_path}: is a directory, expected a YAML or JSON config file"
    bad = write(tmp_path, "train:\n  lr: [1, 2\n")
    assert error(Root, bad).startswith(f"{bad}: invalid YAML at line 3, column 1:")
    listing = write(tmp_path, "- a\n- b\n")
    assert error(Root, listing) == f"{listing}: expected a mapping of keys at the top level, got a list"
    dup = write(tmp_path, "train:\n  lr: 1\n  lr: 2\n")
    assert error(Root, dup) == f"{dup}: invalid YAML at line 3, column 3: duplicate key 'lr'"
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert error(Root, binary).startswith(f"{binary}: cannot read config file")


# ------------------------------------------------------------------------------------- round trips


def test_dict_round_trip_and_strictness():
    cfg = load_config(Root, overrides=["train.betas=[0.5, 0.6]", "extra.act=relu", "train.loss_weights.a=2"])
    d = config_to_dict(cfg)
    assert d["train"]["betas"] == [0.5, 0.6]  # lists: JSON-able
    assert config_from_dict(Root, json.loads(json.dumps(d))) == cfg
    assert config_from_dict(Root, {"train": {"lr": 0.5}}).train == TrainConfig(lr=0.5)  # missing = default
    with pytest.raises(ConfigError, match=r"^unknown key 'train.bogus'"):
        config_from_dict(Root, {"train": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"^data.window: expected int, got '4' \(str\)$"):
        config_from_dict(Root, {"data": {"window": "4"}})


def test_save_and_format_round_trip(tmp_path):
    # Strings that YAML would otherwise read as numbers, booleans or null must come back as strings.
    cfg = Root(
        data=DataConfig(path="1e5", format="null"),
        model=Net(name="yes"),
        train=TrainConfig(lr=3e-5, run_dir="010", loss_weights={"states": 0.25}),
        tags=["true", ""],
    )
    for name in ("run.yaml", "run.json"):
        path = save_config(cfg, tmp_path / name)
        assert load_config(Root, path) == cfg
    assert json.loads((tmp_path / "run.json").read_text())["train"]["betas"] == [0.9, 0.999]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.yaml"]  # no temp files left
    text = format_config(cfg)
    assert text.startswith("data:\n  path: '1e5'\n  format: 'null'\n")  # sections in block style, quoted
    assert "betas: [0.9, 0.999]\n" in text and "lr: 3.0e-05\n" in text
    assert (tmp_path / "run.yaml").read_text() == text


def test_every_builtin_config_loads_and_is_named_in_the_docs():
    from mtm.config import RunConfig, builtin_configs, resolve_config_path

    names = builtin_configs()
    assert {"reference", "small", "demo", "pixels", "mlp-bc", "mlp-rcbc"} <= set(names)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for name in names:
        cfg = load_config(RunConfig, resolve_config_path(name), [])  # rejects unknown keys
        assert f"`{name}`" in docs, f"docs/configuration.md does not name the built-in config {name!r}"
        assert cfg.train.steps >= 1
    pixels = load_config(RunConfig, resolve_config_path("pixels"), [])
    assert pixels.tokens.image_encoder == "keypoints" and pixels.tokens.image_augment_pad == 0
    # One step per window, half of the masks behaviour cloning's (BENCHMARKS.md, Images: the second recipe).
    assert pixels.data.window == 1 and pixels.train.mask.modes == {"random_autoregressive": 0.5, "bc": 0.5}


@pytest.mark.parametrize("text, shown", [("train: 5\n", "train: expected a section (mapping of TrainConfig keys), got 5"),
                                         ("train:\n", "train: expected a section (mapping of TrainConfig keys), got null"),
                                         ("model: [1, 2]\n", "model: expected a section (mapping of Net keys), got [1, 2] (a list)")])
def test_a_scalar_where_a_section_belongs_is_an_error_even_with_overrides(tmp_path, text, shown):
    cfg_file = write(tmp_path, text)
    assert error(Root, cfg_file) == f"{cfg_file}: {shown}"
    # `mtm train` always adds overrides (--data, --run-dir); they used to replace the scalar silently.
    assert error(Root, cfg_file, ["train.steps=3", "model.width=8"]) == f"{cfg_file}: {shown}"


def test_an_optional_section_may_be_null(tmp_path):
    assert load_config(Root, write(tmp_path, "extra: null\n"), ["train.steps=3"]).extra is None
