"""Configuration: nested dataclasses filled from defaults, a YAML/JSON file and dotted overrides.

Every module that has settings owns a dataclass for them (``DataConfig`` and ``TrainConfig`` live
here, ``ModelConfig`` next to the network). The same generic machinery loads any of them:

    cfg = load_config(Config, "configs/hopper.yaml", ["train.lr=3e-4", "model.width=256"])

Values are applied in three layers — dataclass defaults, then the file, then each ``--set`` in
order — and the merged result is checked once against the type annotations, so a later layer can
repair a combination an earlier one left inconsistent. A section given in the file or in an
override is merged key by key into its defaults; a ``dict`` field given in the file replaces its
default, while ``--set train.loss_weights.actions=2`` adds or changes one key.

Values are read as YAML 1.2 (JSON is a subset): only ``true``/``false`` are booleans (``yes``, ``on``
and ``no`` stay strings), ``3e-4`` is a float, ``010`` is ten. Unknown keys and wrong types raise
``ConfigError`` with one line naming the key, the expected type and, for typos, the closest valid
key. A ``__post_init__`` may validate ranges by raising ``ValueError("field must be ..., got ...")``;
the loader turns it into a ``ConfigError`` prefixed with the section (``train.lr must be > 0``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import os
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from mtm.errors import ConfigError
from mtm.hardware import PrecisionName
from mtm.io import atomic_write_text
from mtm.model.masks import MaskConfig
from mtm.model.network import ModelConfig
from mtm.policy_config import PolicyConfig

T = TypeVar("T")

# --------------------------------------------------------------------------------------------------
# The dataclasses `mtm train` composes (the model's ModelConfig lives in mtm/model/network.py).
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DataConfig:
    path: str = ""  # dataset: an HDF5 file (D4RL, robomimic, native) or a Minari dataset folder
    format: str | None = None  # reader to use; null = detect from the file's layout
    window: int = 4  # timesteps per training sample (the paper's L; 3 tokens each for s, a, R)
    rtg: Literal["sum", "discounted", "average"] = "average"  # return-to-go: MTM uses the average
    gamma: float = 0.99  # discount, used only by rtg=discounted
    rtg_horizon: int = 1000  # H in the average return-to-go: sum of future rewards / (H - t)
    val_fraction: float = 0.1  # share of episodes held out for validation (shuffled, not the tail)
    split_seed: int = 0  # seed of the train/val episode split, independent of the training seed
    extra_paths: list[str] = dataclasses.field(default_factory=list)  # more datasets trained on together with path (mtm train --data A --data B); same robot, each split on its own; their episodes may lack actions or rewards
    weights: list[float] = dataclasses.field(default_factory=list)  # chance that a sample comes from each dataset (path first, then extra_paths); empty = every window equally likely
    only_with: list[Literal["actions", "rewards"]] = dataclasses.field(default_factory=list)  # train only on the episodes that have these modalities (after the split, so the held-out episodes stay the same)

    def __post_init__(self) -> None:
        _check(self.window >= 1, f"window must be >= 1, got {self.window}")
        _check(all(w >= 0 for w in self.weights) and (not self.weights or sum(self.weights) > 0),
               f"weights must be >= 0 with a positive sum, got {list(self.weights)}")
        _check(not self.weights or len(self.weights) == 1 + len(self.extra_paths),
               f"weights has {len(self.weights)} entries for {1 + len(self.extra_paths)} dataset(s) "
               f"(path and extra_paths); give one per dataset")
        _check(0.0 < self.gamma <= 1.0, f"gamma must be in (0, 1], got {self.gamma}")
        _check(self.rtg_horizon >= 1, f"rtg_horizon must be >= 1, got {self.rtg_horizon}")
        _check(0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclasses.dataclass
class TrainConfig:
    steps: int = 140_000  # optimiser steps in total
    batch_size: int = 2048  # windows per step (global: split across processes under torchrun)
    lr: float = 1e-4  # peak learning rate of AdamW
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    weight_decay: float = 0.005  # applied to Linear/attention weights only, never biases or norms
    warmup_steps: int = 40_000  # linear warm-up from 0, then cosine decay to 0 at `steps`
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    loss_on: Literal["all", "masked"] = "all"  # reconstruct every token (MTM) or hidden ones only
    loss_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # per modality; absent = 1
    mask: MaskConfig | str = dataclasses.field(default_factory=MaskConfig)  # the training mask (section below); the short form "random_autoregressive:0.8,bc:0.2" sets its modes
    seed: int = 0  # seeds python, numpy and torch; each process adds its rank
    device: str = "auto"  # auto = cuda, then mps, then cpu; or cuda, cuda:1, cpu, mps
    precision: PrecisionName = "auto"  # auto = bf16 autocast where the device multiplies bf16 natively (CUDA, AVX512-BF16/AMX CPUs), else fp32 (mtm.hardware)
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic kernels (slower); for bit-exact reruns
    log_every: int = 100  # steps between train/... scalars
    val_every: int = 2000  # steps between validation passes; 0 = never
    val_windows: int = 2048  # held-out windows scored per validation pass (fixed, in order)
    save_every: int = 5000  # steps between checkpoints; the final step is always saved
    eval_every: int = 0  # steps between rollouts in the env (eval/... in TensorBoard); 0 = never. The final step is evaluated when > 0
    eval_episodes: int = 10  # episodes per evaluation (seeds eval_seed .. eval_seed + n - 1)
    eval_num_envs: int = 10  # environments stepped together
    eval_policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)  # how the policy acts in these evaluations (mtm.policy_config; precision auto = the run's train.precision)
    eval_seed: int = 1000  # first episode seed of every evaluation (the same episodes each time)
    eval_env: str | None = None  # gymnasium id; null = the dataset's env
    eval_video: bool = False  # also write runs/.../videos/step_N.mp4 of the first episode, and step_N.png, its contact sheet (also in TensorBoard: eval/contact_sheet)
    eval_video_quality: Literal["fast", "nice"] = "fast"  # fast: no shadows, reflections or anti-aliasing (many times faster on a CPU); nice: MuJoCo's full look
    keep_last: int = 3  # checkpoints kept on disk; 0 = keep all
    run_dir: str = "runs/mtm"  # config, TensorBoard events, checkpoints and reports go here

    # Keys of older configs, read as the key that replaced them: {old: (new, value converter)}.
    LEGACY_KEYS: ClassVar[dict[str, tuple[str, Any]]] = {
        "bf16": ("precision", lambda on: _legacy_bool(on, "bf16", "fp32")),  # train.bf16: true/false, before precision
        "eval_mode": ("eval_policy.mode", lambda mode: mode),  # before eval_policy
        "eval_target_fraction": ("eval_policy.target_fraction", lambda p: p),
    }

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "val_windows", "eval_episodes", "eval_num_envs"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "val_every", "save_every", "eval_every", "keep_last", "grad_clip", "weight_decay"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(all(0.0 <= b < 1.0 for b in self.betas), f"betas must be in [0, 1), got {list(self.betas)}")
        for key, weight in self.loss_weights.items():
            _check(weight >= 0, f"loss_weights.{key} must be >= 0, got {weight}")
        _check(bool(self.run_dir), "run_dir must not be empty")
        if isinstance(self.mask, str):  # the short string form (mtm.model.masks.MaskConfig.parse)
            try:
                self.mask = MaskConfig.parse(self.mask)
            except ValueError as exc:
                raise ValueError(f"mask.{exc}") from None


@dataclasses.dataclass
class TokenConfig:
    """How each modality becomes tokens (see mtm.model.tokenizers)."""

    states: Literal["continuous", "binned"] = "continuous"  # one z-scored token per step, or one per dimension
    actions: Literal["continuous", "binned"] = "continuous"  # the same choice for actions (binned: cross-entropy over bins)
    use_returns: bool = True  # add the return-to-go modality (needed for RCBC)
    num_bins: int = 64  # bins per dimension for binned modalities (uniform over the data's min..max)
    min_std: float = 0.1  # z-score floor: x_norm = (x - mean) / max(std, min_std)
    image_keys: list[str] | None = None  # image observations to tokenize; null = all in the data, [] = none
    image_patch_size: int = 16  # pixels per patch side: (H/p)(W/p) tokens per frame
    image_encoder: Literal["patch", "conv", "keypoints"] = "patch"  # linear patch projection (ViT/VIMA), a conv stem per patch, or conv + spatial-softmax keypoints (one token per frame)
    image_keypoints: int = 16  # keypoints per frame with image_encoder=keypoints (the token holds their 2-D coordinates)
    image_augment_pad: int = 4  # random-shift augmentation in training (pixels each way); 0 = off

    def __post_init__(self) -> None:
        _check(self.num_bins >= 2, f"num_bins must be >= 2, got {self.num_bins}")
        _check(self.image_patch_size >= 1, f"image_patch_size must be >= 1, got {self.image_patch_size}")
        _check(self.image_keypoints >= 1, f"image_keypoints must be >= 1, got {self.image_keypoints}")
        _check(self.image_augment_pad >= 0, f"image_augment_pad must be >= 0, got {self.image_augment_pad}")
        _check(self.min_std > 0, f"min_std must be > 0, got {self.min_std}")


@dataclasses.dataclass
class RunConfig:
    """Everything `mtm train` needs; saved resolved as config.yaml in the run directory."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    tokens: TokenConfig = dataclasses.field(default_factory=TokenConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


# Ready-made configurations shipped with the package: `mtm train --config small` or a file path.
BUILTIN_CONFIGS_DIR = Path(__file__).parent / "configs"


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in BUILTIN_CONFIGS_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A built-in config name (e.g. 'small') or a path to a YAML/JSON file."""
    text = str(name_or_path)
    builtin = BUILTIN_CONFIGS_DIR / f"{text}.yaml"
    if os.sep not in text and not Path(text).suffix and builtin.exists():
        return builtin
    path = Path(text)
    if not path.exists():
        raise ConfigError(
            f"{path}: no such config file; give a path or one of the built-in configs: "
            f"{', '.join(builtin_configs())}"
        )
    return path


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of `cls`, then the YAML/JSON file at `path`, then each ``key.sub=value`` override."""
    from_file = _read_config_file(Path(path)) if path is not None else {}
    if path is not None:
        try:  # before the overrides, which would replace a scalar section silently
            _check_sections(cls, from_file, "")
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    raw = copy.deepcopy(from_file)
    for text in overrides:  # unknown keys and wrong types are reported here, naming the --set
        _apply_override(cls, raw, text)
    try:
        return _build(cls, None, raw, "")
    except ConfigError as exc:
        # Say which layer is at fault: name the file only if the file alone already fails this way.
        if path is not None and (not overrides or _build_error(cls, from_file) == str(exc)):
            source = f"{path}: "
        else:
            source = "--set: " if overrides else ""
        raise ConfigError(source + str(exc)) from None


def _check_sections(cls: type, raw: Mapping, where: str) -> None:
    """Every section the file gives must be a mapping (`train: 5` is not a section; null is one only
    where the section is optional). Other mistakes are left to `_build`, which names them."""
    fields, hints = _init_fields(cls), _hints(cls)
    for key, value in raw.items():
        section = _section_type(hints[key]) if key in fields else None
        if section is None:
            continue
        path = f"{where}.{key}" if where else str(key)
        if value is None and section is not hints[key]:  # Optional[Section]: null means none
            continue
        if isinstance(value, str) and str in get_args(hints[key]):  # a section's short string form
            continue
        if not isinstance(value, Mapping):
            raise _type_error(path, hints[key], value)
        _check_sections(section, value, path)


def _build_error(cls: type, raw: Mapping) -> str | None:
    try:
        _build(cls, None, raw, "")
    except ConfigError as exc:
        return str(exc)
    return None


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuild a config from `config_to_dict` output; missing keys take defaults, unknown ones fail."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of config keys, got {_kind(data)}")
    return _build(cls, None, data, "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-able dict (tuples become lists); `config_from_dict` inverts it."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"config_to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return _to_plain(cfg)


def format_config(cfg: Any) -> str:
    """The config as YAML text (valid input for `load_config`), for logs and TensorBoard."""
    return yaml.dump(
        config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config (JSON for *.json, else YAML) atomically: a reader never sees half."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".json":
        text = json.dumps(config_to_dict(cfg), indent=2) + "\n"
    else:
        text = format_config(cfg)
    atomic_write_text(p, text)
    return p


# --------------------------------------------------------------------------------------------------
# YAML 1.2 scalars: PyYAML implements YAML 1.1, where `3e-4` is a string, `on` is true and `010` is
# eight. Configs are written by people, so use the 1.2 core schema (what JSON and most tools agree
# on). The dumper shares the resolvers so that a string such as "1e5" is quoted when written back.
# --------------------------------------------------------------------------------------------------

_RESOLVERS = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9][0-9_]*|[-+]?0x[0-9a-fA-F_]+|[-+]?0o[0-7_]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*|[0-9][0-9_]*(?=[eE]))(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"^<<$", "<"),
]


class _Loader(yaml.SafeLoader):
    yaml_implicit_resolvers: dict = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # PyYAML silently keeps the last of two equal keys; in a config that hides a mistake.
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    prefixed = text.lstrip("+-")[:2].lower() in ("0x", "0o")
    return int(text, 0) if prefixed else int(text, 10)  # base 10: a leading zero is not octal


class _Dumper(yaml.SafeDumper):
    yaml_implicit_resolvers: dict = {}


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    # Sections in block style, short lists of scalars inline: `betas: [0.9, 0.999]`.
    flat = all(v is None or isinstance(v, (bool, int, float, str)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


for _tag, _pattern, _first in _RESOLVERS:
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
    _Dumper.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with mtm's YAML 1.2 rules (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=_Loader)


def _read_config_file(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML or JSON config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read config file ({reason})") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:  # an empty file means "all defaults"
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {_kind(data)}")
    return data


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------


def _apply_override(cls: type, raw: dict, text: str) -> None:
    """Check one ``a.b.c=value`` against the types of `cls` and merge it into the raw tree."""
    key, sep, value_text = text.partition("=")
    key, value_text = key.strip(), value_text.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    segments = key.split(".")
    if not all(segments):
        raise ConfigError(f"--set {text!r}: malformed key {key!r}, expected dotted names like train.lr")
    try:
        value = parse_yaml(value_text)
    except yaml.YAMLError:
        value = value_text  # not YAML: it can only be meant as text; a non-str field will say so

    tp: Any = cls
    default: Any = _MISSING  # the default at the current path, to merge a dict override into
    node = raw
    for i, seg in enumerate(segments):
        parent = ".".join(segments[:i])
        section = _section_type(tp)
        if section is not None:
            fields = _init_fields(section)
            if seg in getattr(section, "LEGACY_KEYS", {}) and i == len(segments) - 1:
                try:  # --set train.bf16=true means --set train.precision=bf16
                    new, value = _legacy_value(section, seg, value, parent)
                except ConfigError as exc:
                    raise ConfigError(f"--set: {exc}") from None
                segments[i:] = new.split(".")  # the loop walks on into a dotted successor's section
                seg, value_text = segments[i], str(value)
                key = ".".join(segments)
            if seg not in fields:
                raise ConfigError(f"--set: {_unknown_key(seg, parent, fields)}")
            tp = _hints(section)[seg]
            default = getattr(default, seg) if isinstance(default, section) else _field_default(fields[seg])
        elif _is_mapping_type(tp):
            tp = (get_args(tp) or (Any, Any))[1]
            default = default.get(seg, _MISSING) if isinstance(default, Mapping) else _MISSING
        else:
            raise ConfigError(f"--set: '{parent}' is of type {_type_name(tp)}, not a section; cannot set '{key}'")
        if i == len(segments) - 1:
            break
        child = node.get(seg)
        inner = _section_type(tp)
        if isinstance(child, str) and inner is not None and hasattr(inner, "parse"):
            try:  # a section given in its short string form: expand it, then set the key inside
                child = node[seg] = _to_plain(inner.parse(child))
            except ValueError as exc:
                raise ConfigError(f"--set: {'.'.join(segments[:i + 1])}.{exc}") from None
        if not isinstance(child, dict):
            # Entering a dict-valued field that the file did not set: start from its default so the
            # override adds one key instead of replacing the whole dict.
            keep = _is_mapping_type(tp) and _section_type(tp) is None and isinstance(default, Mapping)
            child = _to_plain(default) if keep else {}
            node[seg] = child
        node = child

    try:
        converted = _convert(tp, value, key, default, value_text)
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from None
    if dataclasses.is_dataclass(converted) and isinstance(value, Mapping):
        node[seg] = _deep_merge(node.get(seg) if isinstance(node.get(seg), dict) else {}, value)
    else:
        node[seg] = _to_plain(converted)


def _deep_merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


# --------------------------------------------------------------------------------------------------
# Building and type checking
# --------------------------------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Any = _Missing()


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints resolves string annotations (`from __future__ import annotations`).
    return get_type_hints(cls)


def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _MISSING


def _build(cls: type, base: Any, data: Mapping, where: str) -> Any:
    """An instance of `cls`: `base` (or the field defaults) with the keys of `data` converted on top."""
    fields = _init_fields(cls)
    data = _translate_legacy(cls, data, where)
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key(key, where, fields))
    hints = _hints(cls)
    values = {}
    for name, f in fields.items():
        current = getattr(base, name) if base is not None else _field_default(f)
        path = f"{where}.{name}" if where else name
        if name in data:
            values[name] = _convert(hints[name], data[name], path, current)
        elif current is _MISSING:
            raise ConfigError(f"missing required key '{path}'")
        else:
            values[name] = current
    try:
        return cls(**values)
    except ValueError as exc:  # a __post_init__ range check: "lr must be > 0, got -1"
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None


def _legacy_bool(value: Any, on: Any, off: Any) -> Any:
    if not isinstance(value, bool):
        raise TypeError(bool)
    return on if value else off


def _legacy_value(cls: type, key: str, value: Any, where: str) -> tuple[str, Any]:
    """(new dotted key, new value) for an old key of `cls` (see TrainConfig.LEGACY_KEYS); a converter
    that raises TypeError(T) says the old key's value had to be of type T."""
    new, convert = cls.LEGACY_KEYS[key]
    path = f"{where}.{key}" if where else key
    try:
        return new, convert(value)
    except TypeError as exc:
        raise _type_error(path, exc.args[0], value) from None


def _translate_legacy(cls: type, data: Mapping, where: str) -> Mapping:
    """`data` with the old keys of `cls` replaced by their successors (a dotted successor lands in
    its sub-section); where both are given, the new key wins (a later layer, e.g. `--set
    train.precision=...` over an old file's `bf16`)."""
    legacy = getattr(cls, "LEGACY_KEYS", {})
    if not any(key in data for key in legacy):
        return data
    out = {k: v for k, v in data.items() if k not in legacy}
    for key in legacy:
        if key in data:
            new, value = _legacy_value(cls, key, data[key], where)
            *sections, leaf = new.split(".")
            node = out
            for section in sections:
                child = node.get(section)
                if child is None:
                    child = {}
                elif not isinstance(child, Mapping):
                    break  # the section itself is malformed: its own check reports it
                node[section] = child = dict(child)
                node = child
            else:
                node.setdefault(leaf, value)
    return out


def _convert(tp: Any, value: Any, where: str, base: Any = _MISSING, raw: str | None = None) -> Any:
    """`value` checked against annotation `tp` (and coerced where lossless); ConfigError if not.

    `raw` is the text of a command-line override: a str field takes it verbatim, so that
    ``data.path=2024`` or ``run_dir=on`` mean the text the user typed, not a number or a bool.
    """
    if tp is Any:
        return value
    origin, args = get_origin(tp), get_args(tp)

    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:  # Optional[X]: X's own error is the most precise one
            return _convert(arms[0], value, where, base, raw)
        sections = [a for a in arms if dataclasses.is_dataclass(a)]
        if isinstance(value, Mapping) and len(sections) == 1:  # a mapping can only mean the section
            return _convert(sections[0], value, where, base, raw)
        for arm in arms:
            try:
                return _convert(arm, value, where, base, raw if arm is str else None)
            except ConfigError:
                continue
        raise _type_error(where, tp, value)

    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        text = str(value)
        close = difflib.get_close_matches(text, [str(c) for c in args], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        choices = ", ".join(repr(c) for c in args)
        raise ConfigError(f"{where}: expected one of {choices}, got {_show(value)}{hint}")

    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _type_error(where, tp, value)
        return _build(tp, base if isinstance(base, tp) else None, value, where)

    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(where, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # steps=1e5 means 100000
            return int(value)
        raise _type_error(where, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(where, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        if raw is not None:
            return raw
        hint = "; quote it to make it a string" if isinstance(value, (int, float, bool)) or value is None else ""
        raise ConfigError(f"{where}: expected str, got {_show(value)}{hint}")
    if tp is type(None):
        if value is None:
            return None
        raise _type_error(where, tp, value)
    if tp is Path or tp is PurePath:
        if isinstance(value, (str, PurePath)):
            return Path(value)
        raise _type_error(where, tp, value)

    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(where, tp, value)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items ({_type_name(tp)}), got {len(value)}")
            items = [_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items

    if _is_mapping_type(tp):
        if not isinstance(value, Mapping):
            raise _type_error(where, tp, value)
        key_tp, val_tp = args or (Any, Any)
        out = {}
        for k, v in value.items():
            key = _convert(key_tp, k, f"{where} (key {_show(k)})")
            out[key] = _convert(val_tp, v, f"{where}.{k}")
        return out

    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _type_error(where, tp, value)
    raise TypeError(f"mtm.config cannot check the annotation {tp!r} of '{where}'")


def _section_type(tp: Any) -> type | None:
    """The dataclass behind `tp` (X or Optional[X]) when it is a config section, else None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if get_origin(tp) in (Union, types.UnionType):
        arms = [a for a in get_args(tp) if a is not type(None)]
        sections = [a for a in arms if dataclasses.is_dataclass(a)]
        # X, Optional[X], or X | str (a section with a short string form, e.g. train.mask)
        if len(sections) == 1 and all(a is str for a in arms if a is not sections[0]):
            return sections[0]
    return None


def _is_mapping_type(tp: Any) -> bool:
    return get_origin(tp) in (dict, Mapping) or tp is dict


# --------------------------------------------------------------------------------------------------
# Messages and plain values
# --------------------------------------------------------------------------------------------------


def _unknown_key(key: Any, where: str, fields: Mapping[str, Any]) -> str:
    full = f"{where}.{key}" if where else str(key)
    close = difflib.get_close_matches(str(key), list(fields), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    scope = f"in '{where}'" if where else "at the top level"
    return f"unknown key '{full}'{hint}; valid keys {scope}: {', '.join(fields)}"


def _type_error(where: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {_type_name(tp)}, got {_show(value)}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if tp is bool:
        return "bool (true or false)"
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return f"a section (mapping of {tp.__name__} keys)"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{name}[{inner}]" if args else name
    return getattr(tp, "__name__", str(tp))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = _kind(value)
    return text if kind in ("int", "float") else f"{text} ({kind})"


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value
