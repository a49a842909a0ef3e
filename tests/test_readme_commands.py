"""Every README command is copy-pasteable: each dataset file and run directory a command in the
README's code blocks reads is written by a command the README shows (datasets/README.md's too)."""

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def commands(text: str) -> list[list[str]]:
    """The mtm / torchrun / minari command lines of a Markdown file's fenced code blocks."""
    found = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith(("mtm ", "torchrun ", "minari ")):
                found.append(shlex.split(line))
    return found


def reads_and_writes(argv: list[str]) -> tuple[set[str], set[str]]:
    reads, writes = set(), set()
    if argv[0] == "minari":
        return reads, ({f"minari:{argv[2]}"} if argv[1] == "download" else set())
    sub = argv[argv.index("train") if "train" in argv else 1]
    positional = [a for i, a in enumerate(argv[2:], 2) if not a.startswith("-") and not argv[i - 1].startswith("--")]
    for i, a in enumerate(argv[:-1]):
        value = argv[i + 1]
        if a in ("--data", "--checkpoint", "--resume"):
            reads.add(value)
        elif a in ("--output", "--run-dir"):
            writes.add(value)
    if sub == "convert":
        src, dst = positional[:2]
        reads.add(src if src.endswith((".hdf5", ".h5")) else f"minari:{src}")
        writes.add(dst)
    elif sub == "inspect":
        reads.add(positional[0])
    return reads, writes


@pytest.mark.parametrize("doc", ["README.md", "datasets/README.md"])
def test_every_path_a_command_reads_is_made_by_a_command_shown(doc):
    lines = commands((REPO / doc).read_text())
    assert lines, f"no commands found in {doc}"
    made, missing = set(), []
    for argv in lines:
        reads, writes = reads_and_writes(argv)
        # Files the user is told to bring (D4RL's download folder, the project's shared data).
        missing += [(r, " ".join(argv)) for r in reads
                    if r not in made and not r.startswith(("~/.d4rl/", "../shared/", "lift/"))]
        made |= writes
    assert missing == []


def test_the_parser_sees_what_is_missing():
    reads, writes = reads_and_writes(shlex.split("mtm train --config small --data x.hdf5 --run-dir runs/a"))
    assert reads == {"x.hdf5"} and writes == {"runs/a"}
    reads, writes = reads_and_writes(shlex.split("mtm convert mujoco/hopper/medium-v0 d.hdf5 --drop actions"))
    assert reads == {"minari:mujoco/hopper/medium-v0"} and writes == {"d.hdf5"}
