"""Loading a configuration: defaults, then a YAML/JSON file, then dotted ``--set`` overrides.

    cfg = load_config(RunConfig, "configs/hopper.yaml", ["train.lr=3e-4", "model.width=256"])

The same generic machinery loads any config dataclass (mtm's are in mtm.config.schema); how the
layers merge and how values are read (YAML 1.2, mtm.config.yaml12) is docs/configuration.md. The
merged result is checked once against the type annotations. Unknown keys and wrong types raise
``ConfigError`` with one line naming the key, the expected type and, for typos, the closest valid
key. A ``__post_init__`` may raise ``ValueError("field must be ..., got ...")``; the loader prefixes
the section (``train.lr must be > 0``). Keys of older configs are read through ``LEGACY_KEYS``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import os
import types
from collections.abc import Mapping, Sequence
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from mtm.config.yaml12 import dump_yaml, parse_yaml
from mtm.errors import ConfigError
from mtm.io import atomic_write_text

T = TypeVar("T")

# Ready-made configurations shipped with the package: `mtm train --config small` or a file path.
BUILTIN_CONFIGS_DIR = Path(__file__).parents[1] / "configs"


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
        names = builtin_configs()
        # A bare word is meant as a built-in name: suggest the closest one.
        close = difflib.get_close_matches(Path(text).stem.lower(), names, n=1, cutoff=0.6) if os.sep not in text else []
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"{path}: no such config file or built-in config; {hint}give a path or one of the "
                          f"built-in configs: {', '.join(names)}")
    return path


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
    for key, value in raw.items():
        tp = _hints(cls).get(key)
        section, path = _section_type(tp), f"{where}.{key}" if where else str(key)
        if section is None or value is None and section is not tp or isinstance(value, str) and str in get_args(tp):
            continue  # not a section; null for an optional section; a section's short string form
        if not isinstance(value, Mapping):
            raise _type_error(path, tp, value)
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
    return dump_yaml(config_to_dict(cfg))


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config (JSON for *.json, else YAML) atomically: a reader never sees half."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    json_file = p.suffix.lower() == ".json"
    atomic_write_text(p, json.dumps(config_to_dict(cfg), indent=2) + "\n" if json_file else format_config(cfg))
    return p


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


def _apply_override(cls: type, raw: dict, text: str) -> None:
    """Check one ``a.b.c=value`` against the types of `cls` and merge it into the raw tree."""
    key, sep, value_text = text.partition("=")
    key, value_text = key.strip(), value_text.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    if not all(key.split(".")):
        raise ConfigError(f"--set {text!r}: malformed key {key!r}, expected dotted names like train.lr")
    try:
        value = parse_yaml(value_text)
    except yaml.YAMLError:
        value = value_text  # not YAML: it can only be meant as text; a non-str field will say so
    try:
        _set(cls, raw, key.split("."), value, value_text)
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from None


def _set(cls: type, raw: dict, segments: list[str], value: Any, value_text: str) -> None:
    """Walk the dotted key through the types of `cls` and the raw tree, then check and store the value."""
    tp: Any = cls
    default: Any = MISSING  # the default at the current path, to merge a dict override into
    node = raw
    for i, seg in enumerate(segments):
        parent = ".".join(segments[:i])
        section = _section_type(tp)
        if section is not None:
            fields = _init_fields(section)
            if seg in getattr(section, "LEGACY_KEYS", {}) and i == len(segments) - 1:
                # --set train.bf16=true means --set train.precision=bf16
                new, value = _legacy_value(section, seg, value, parent)
                segments[i:] = new.split(".")  # the loop walks on into a dotted successor's section
                seg, value_text = segments[i], str(value)
            if seg not in fields:
                raise ConfigError(_unknown_key(seg, parent, fields))
            tp = _hints(section)[seg]
            default = getattr(default, seg) if isinstance(default, section) else _field_default(fields[seg])
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
            default = default.get(seg, MISSING) if isinstance(default, Mapping) else MISSING
        else:
            key = ".".join(segments)
            raise ConfigError(f"'{parent}' is of type {_type_name(tp)}, not a section; cannot set '{key}'")
        if i == len(segments) - 1:
            break
        child = node.get(seg)
        inner = _section_type(tp)
        if isinstance(child, str) and inner is not None and hasattr(inner, "parse"):
            try:  # a section given in its short string form: expand it, then set the key inside
                child = node[seg] = _to_plain(inner.parse(child))
            except ValueError as exc:
                raise ConfigError(f"{'.'.join(segments[:i + 1])}.{exc}") from None
        if not isinstance(child, dict):
            # Entering a dict field that the file did not set: start from its default so the override
            # adds one key instead of replacing the whole dict (a section starts empty: the build fills it).
            child = node[seg] = _to_plain(default) if isinstance(default, Mapping) else {}
        node = child

    converted = _convert(tp, value, ".".join(segments), default, value_text)
    if dataclasses.is_dataclass(converted) and isinstance(value, Mapping):
        node[seg] = _deep_merge(node.get(seg) if isinstance(node.get(seg), dict) else {}, value)
    else:
        node[seg] = _to_plain(converted)


def _deep_merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # get_type_hints resolves string annotations (`from __future__ import annotations`).
    return get_type_hints(cls)


def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default  # MISSING if neither


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
        elif current is MISSING:
            raise ConfigError(f"missing required key '{path}'")
        else:
            values[name] = current
    try:
        return cls(**values)
    except ValueError as exc:  # a __post_init__ range check: "lr must be > 0, got -1"
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None


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
    out = {k: v for k, v in data.items() if k not in legacy}
    for key in legacy:
        if key in data:
            new, value = _legacy_value(cls, key, data[key], where)
            for name in reversed(new.split(".")):
                value = {name: value}
            out = _deep_merge(value, out)
    return out


def _convert(tp: Any, value: Any, where: str, base: Any = MISSING, raw: str | None = None) -> Any:
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

    # Scalars: no coercion but the lossless ones (bool is not taken for a number).
    if tp is bool and type(value) is bool or tp is int and type(value) is int:
        return value
    if tp is int and type(value) is float and value.is_integer():  # steps=1e5 means 100000
        return int(value)
    if tp is float and type(value) in (int, float):
        return float(value)
    if tp is str and (isinstance(value, str) or raw is not None):
        return value if isinstance(value, str) else raw
    if tp is str:
        hint = "; quote it to make it a string" if isinstance(value, (int, float, bool)) or value is None else ""
        raise ConfigError(f"{where}: expected str, got {_show(value)}{hint}")
    if tp in (bool, int, float):
        raise _type_error(where, tp, value)

    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(where, tp, value)
        if origin is tuple and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items ({_type_name(tp)}), got {len(value)}")
            items = [_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))]
        else:
            items = [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items

    if origin is dict:
        if not isinstance(value, Mapping):
            raise _type_error(where, tp, value)
        key_tp, val_tp = args
        return {_convert(key_tp, k, f"{where} (key {_show(k)})"): _convert(val_tp, v, f"{where}.{k}")
                for k, v in value.items()}

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
    return value
