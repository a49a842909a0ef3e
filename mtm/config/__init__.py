"""Configuration, one job per module: the dataclasses `mtm train` composes (mtm.config.schema), mtm's
YAML 1.2 dialect (mtm.config.yaml12), and the layered loader with its type checks, messages and
writer (mtm.config.loader). docs/architecture.md says why it is not OmegaConf or draccus."""

from mtm.config.loader import (BUILTIN_CONFIGS_DIR, builtin_configs, config_from_dict, config_to_dict,
                               format_config, load_config, resolve_config_path, save_config)
from mtm.config.schema import DataConfig, RunConfig, TokenConfig, TrainConfig
from mtm.config.yaml12 import parse_yaml

__all__ = ["BUILTIN_CONFIGS_DIR", "DataConfig", "RunConfig", "TokenConfig", "TrainConfig", "builtin_configs",
           "config_from_dict", "config_to_dict", "format_config", "load_config", "parse_yaml",
           "resolve_config_path", "save_config"]
