"""Regenerate the field reference in docs/configuration.md from the config dataclasses.

Each field's line in the source (`name: type = default  # comment`) is the documentation; this
script copies it into the table between the markers, so the doc cannot drift from the code
(tests/test_config_docs.py checks it is current).

    python scripts/gen_config_docs.py          # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from pathlib import Path

from mtm.config import DataConfig, RunConfig, TokenConfig, TrainConfig
from mtm.model.masks import MaskConfig
from mtm.model.network import ModelConfig
from mtm.policy_config import PolicyConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN, END = "<!-- fields:begin -->", "<!-- fields:end -->"
SECTIONS = {"data": DataConfig, "tokens": TokenConfig, "model": ModelConfig, "train": TrainConfig}
# Sections nested inside a section, documented after it.
SUBSECTIONS = {"train.mask": MaskConfig, "train.eval_policy": PolicyConfig}
FIELD_LINE = re.compile(r"^\s+(\w+): (.+?) = (.+?)(?:\s+#\s*(.*))?$")


def field_rows(cls: type) -> list[tuple[str, str, str, str]]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    rows = []
    for line in inspect.getsource(cls).splitlines():
        m = FIELD_LINE.match(line)
        if m and m.group(1) in fields and m.group(1) not in {r[0] for r in rows}:  # not a method's local
            default = m.group(3)
            factory = fields[m.group(1)].default_factory
            if factory is not dataclasses.MISSING:  # the value the factory makes, or a section's pointer
                value = factory()
                default = "(section below)" if dataclasses.is_dataclass(value) else repr(value)
            rows.append((m.group(1), m.group(2).replace("|", "\\|"), default.replace("|", "\\|"),
                         (m.group(4) or "").replace("|", "\\|")))
    return rows


def reference() -> str:
    assert set(SECTIONS) == {f.name for f in dataclasses.fields(RunConfig)}
    parts = [BEGIN, ""]
    for section, cls in SECTIONS.items():
        parts += [f"### `{section}`", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        parts += [f"| `{section}.{n}` | `{t}` | `{d}` | {c} |" for n, t, d, c in field_rows(cls)]
        parts.append("")
        for sub, sub_cls in SUBSECTIONS.items():
            if sub.startswith(section + "."):
                parts += [f"### `{sub}`", "", "| field | type | default | meaning |", "|---|---|---|---|"]
                parts += [f"| `{sub}.{n}` | `{t}` | `{d}` | {c} |" for n, t, d, c in field_rows(sub_cls)]
                parts.append("")
    parts.append(END)
    return "\n".join(parts)


def render(text: str) -> str:
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        return head + reference() + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + reference() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = DOC.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{DOC} is out of date: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
