"""The dependency graph of mtm/ and envs/ has no cycles, counting imports inside functions too
(an import moved into a function to dodge a cycle hides the cycle; it does not remove it)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mtm", "envs")


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """Project modules that `name` imports anywhere in its file (a submodule when named, else the
    module itself; importing a submodule's parent package implicitly is not counted)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def test_the_scanner_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "mtm.model.tokenizers.base" in graph["mtm.model.tokenizers.image"]
    assert "mtm.errors" in graph["mtm.cli.group"]
    assert "mtm.training.loop" in graph["mtm.cli.train_command"]  # imported inside the command function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


# docs/architecture.md's layers: a module may import its own layer and those below, never above.
LAYERS = {
    0: ("mtm.errors", "mtm.io", "mtm.hardware", "mtm.interrupts", "mtm.policy_config", "mtm.version"),
    1: ("envs",),
    2: ("mtm.data", "mtm.model"),
    3: ("mtm.config", "mtm.checkpoint", "mtm.run_metadata"),
    4: ("mtm.policy", "mtm.planning", "mtm.cuda_graph", "mtm.rollout", "mtm.video", "mtm.contact_sheet", "mtm.replay"),
    5: ("mtm.evaluation", "mtm.collect"),
    6: ("mtm.training",),
    7: ("mtm.demo", "mtm.cli", "mtm.__main__", "mtm"),  # mtm: the package root, the public API (load_policy)
}


def layer_of(module: str) -> int:
    """The layer of the longest listed prefix of `module`."""
    best, depth = None, -1
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            # The package root is a layer of its own, not a prefix: an unlisted mtm.x must still fail.
            within = module.startswith(prefix + ".") and prefix != "mtm"
            if (module == prefix or within) and prefix.count(".") > depth:
                best, depth = layer, prefix.count(".")
    assert best is not None, f"{module} is in no layer of docs/architecture.md: add it to LAYERS"
    return best


def test_every_import_points_down_the_layers():
    graph = import_graph()
    upward = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
              for a, targets in sorted(graph.items()) for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not upward, "imports that point up: " + "; ".join(upward)


def test_envs_imports_nothing_of_mtm_and_data_and_model_ignore_each_other():
    graph = import_graph()
    for a, targets in graph.items():
        if a.startswith("envs"):
            assert not [b for b in targets if b.startswith("mtm")], a
        if a.startswith("mtm.data"):
            assert not [b for b in targets if b.startswith("mtm.model")], a
        if a.startswith("mtm.model"):
            assert not [b for b in targets if b.startswith("mtm.data")], a
