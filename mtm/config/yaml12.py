"""mtm's YAML dialect: the YAML 1.2 core schema on top of PyYAML, for config files and `--set` values.

PyYAML implements YAML 1.1, where `3e-4` is a string, `on` is true and `010` is eight. Configs are
written by people, so mtm reads the 1.2 core schema (what JSON and most tools agree on): only
``true``/``false`` are booleans, ``3e-4`` is a float, ``010`` is ten; a key given twice in one
mapping is an error. The dumper shares the resolvers so that a string such as "1e5" is quoted when
written back.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_RESOLVERS = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9][0-9_]*|[-+]?0x[0-9a-fA-F_]+|[-+]?0o[0-7_]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*|[0-9][0-9_]*(?=[eE]))(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
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


def dump_yaml(data: Any) -> str:
    """`data` (plain values) as block-style YAML that `parse_yaml` reads back to the same values."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
