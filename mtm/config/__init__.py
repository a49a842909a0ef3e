"""Configuration, one job per module:

- mtm.config.schema: the dataclasses `mtm train` composes (``DataConfig``, ``TokenConfig``,
  ``TrainConfig``, ``RunConfig``), each field with its default and meaning;
- mtm.config.yaml12: mtm's YAML dialect (the YAML 1.2 core schema on PyYAML);
- mtm.config.loader: the layered loader (defaults, a file, ``--set`` overrides), its type checks and
  error messages, and writing a resolved config back.
"""

from mtm.config.loader import (
    BUILTIN_CONFIGS_DIR,
    builtin_configs,
    config_from_dict,
    config_to_dict,
    format_config,
    load_config,
    resolve_config_path,
    save_config,
)
from mtm.config.schema import DataConfig, RunConfig, TokenConfig, TrainConfig
from mtm.config.yaml12 import parse_yaml

__all__ = [
    "BUILTIN_CONFIGS_DIR",
    "DataConfig",
    "RunConfig",
    "TokenConfig",
    "TrainConfig",
    "builtin_configs",
    "config_from_dict",
    "config_to_dict",
    "format_config",
    "load_config",
    "parse_yaml",
    "resolve_config_path",
    "save_config",
]
