"""Every `python scripts/X.py ...` command the documentation quotes still parses: BENCHMARKS.md,
the other Markdown files, the scripts' own docstrings and scripts/gpu_checks.sh. A figure is only
reproducible while its command runs; this catches a renamed or dropped flag without running any
benchmark (each script's main() stops right after its arguments are parsed)."""

import argparse
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
# A command: an interpreter, then a script of scripts/ (from the repo root or from scripts/).
COMMAND = re.compile(r"""(?:^|[\s`(])(?:\S*python3?|"\$PY"|\$PY)\s+(?:scripts/)?(\w+\.py)\b(.*)""")
SHELL_END = {">", ">>", "|", "&&", "||", ";", "2>&1", "&"}


def gpu_checks_lines() -> list[str]:
    """gpu_checks.sh's commands, continuation lines joined, each array variable expanded to every
    value the script gives it (full and quick sizes), the other variables to a placeholder path."""
    text = (SCRIPTS / "gpu_checks.sh").read_text().replace("\\\n", " ")
    arrays: dict[str, list[str]] = {}
    for name, values in re.findall(r"^\s*(\w+_ARGS)=\((.*)\)\s*$", text, re.M):
        arrays.setdefault(name, []).append(values)
    lines = [""]
    for line in text.splitlines():
        expanded = [line]
        for name, variants in arrays.items():
            if f'"${{{name}[@]}}"' in line:
                expanded = [e.replace(f'"${{{name}[@]}}"', v) for e in expanded for v in variants]
        lines += [re.sub(r'"?\$\{?(\w+)\}?([^"\s]*)"?', r"/tmp/\1\2", e).replace("/tmp/PY", '"$PY"')
                  if "$PY" in e else e for e in expanded]
    return lines


def quoted_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script, arguments) of every quoted command."""
    sources = {str(p.relative_to(REPO)): p.read_text().splitlines()
               for p in [*REPO.glob("*.md"), *(REPO / "docs").glob("*.md"), *(REPO / "datasets").glob("*.md")]}
    for script in SCRIPTS.glob("*.py"):
        sources[f"scripts/{script.name} (docstring)"] = script.read_text().split('"""')[1].splitlines()
    sources["scripts/gpu_checks.sh"] = gpu_checks_lines()
    found = []
    for where, lines in sources.items():
        for line in lines:
            for match in COMMAND.finditer(line):
                script, rest = match.groups()
                rest = rest.split("`")[0]  # an inline command ends with its backquote
                if "[" in rest or "..." in rest:  # a usage synopsis ([--flag N]), not a command
                    continue
                args = []
                for token in shlex.split(rest, comments=True):
                    if token in SHELL_END or token.startswith((">", "2>")):
                        break
                    args.append(token)
                found.append((where, script, args))
    return found


COMMANDS = quoted_commands()


class Parsed(Exception):
    pass


def test_the_documentation_quotes_the_benchmark_commands():
    scripts = {script for _, script, _ in COMMANDS}
    assert {"bench_train.py", "bench_env.py", "bench_eval.py", "bench_inference.py", "bench_data.py",
            "bench_video.py", "bench_images.py"} <= scripts
    assert sum(where == "scripts/gpu_checks.sh" for where, _, _ in COMMANDS) >= 4


@pytest.mark.parametrize("where,script,args", COMMANDS, ids=[f"{w}: {s} {' '.join(a)}" for w, s, a in COMMANDS])
def test_quoted_command_parses(where, script, args, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    module = importlib.import_module(Path(script).stem)
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *a, **kw):
        original(self, *a, **kw)  # exits 2 on an unknown flag or a bad value
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(Parsed):
        module.main()
