"""The house order (issue 26), read from the source's imports (every import statement, function-level ones too):
no import circle, no import from a lower layer into a higher one, and nothing the device runtime imports reaches
the converters. ARCHITECTURE.md draws the same layers."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edgeship"

# the layers, bottom up (ARCHITECTURE.md): a module may import its own layer and the ones below it
LAYERS = [
    ("facts", ("errors", "fileio", "spec", "preprocess", "labels", "limits", "roles", "native_stderr", "progress",
               "records", "manifest", "formats")),
    ("runtime", ("runtime",)),
    ("calibration", ("calibration",)),
    ("builders", ("converters", "targets")),
    ("jobs", ("demo", "quickstart", "report")),
    ("commands", ("commands", "cli")),
]


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = f
    return out


MODS = modules()


def imports(name: str) -> set[str]:
    """The edgeship modules ``name`` imports (resolved to the longest existing module name)."""
    path = MODS[name]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                keep = len(base) - node.level + (1 if path.name == "__init__.py" else 0)
                root = ".".join(base[:keep] + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            named = [f"{root}.{a.name}" for a in node.names if f"{root}.{a.name}" in MODS]
            cands = named if len(named) == len(node.names) else named + [root]  # `from .. import formats`: the module
        elif isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        else:
            continue
        for c in cands:
            while c and c not in MODS:
                c = c.rsplit(".", 1)[0] if "." in c else ""
            if c and c != name:
                out.add(c)
    if path.name == "__init__.py":  # a package re-exporting its own children is not a dependency
        out = {m for m in out if not m.startswith(name + ".")}
    return out


GRAPH = {m: imports(m) for m in MODS}


def layer(module: str) -> int:
    if module == "edgeship":
        return 0  # the package root: its version, and the public API imported lazily by name (no import statement)
    top = module.split(".")[1]
    return next(i for i, (_, names) in enumerate(LAYERS) if top in names)


def test_every_module_has_a_layer():
    for m in MODS:
        layer(m)


def test_no_import_circles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10000)
    for v in GRAPH:
        if v not in index:
            visit(v)
    assert circles == []


def test_no_import_from_a_lower_layer_into_a_higher_one():
    wrong = [f"{m} ({LAYERS[layer(m)][0]}) imports {t} ({LAYERS[layer(t)][0] if layer(t) < len(LAYERS) else 'root'})"
             for m, targets in GRAPH.items() for t in targets if layer(t) > layer(m)]
    assert wrong == []


def test_the_device_runtime_reaches_no_converter():
    """Everything edgeship.runtime imports, followed through every module it reaches."""
    seen, todo = set(), [m for m in MODS if m == "edgeship.runtime" or m.startswith("edgeship.runtime.")]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(GRAPH[m])
    assert not [m for m in seen if m.startswith(("edgeship.converters", "edgeship.calibration", "edgeship.targets",
                                                 "edgeship.commands", "edgeship.quickstart", "edgeship.demo"))]
    assert "edgeship.formats.tflite" in seen and "edgeship.runtime.backends.litert" in seen


def test_no_module_over_500_lines_but_the_device_agent():
    long = {str(p.relative_to(PKG.parent)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500 and p.name != "agent.py"}
    assert long == {}


def test_openvino_is_imported_in_one_place():
    """``import openvino`` imports its telemetry, which phones home from a child process when a converter or NNCF
    runs (offline: a traceback on stderr); only formats.openvino.import_openvino imports it, after stubbing that
    out, so the first import in a process (verify opening an IR before converting) cannot be an unguarded one."""
    found = []
    for name, path in MODS.items():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(m == "openvino" or m.startswith("openvino.") for m in mods):
                found.append(f"{name}:{node.lineno}")
    assert [f.split(":")[0] for f in found] == ["edgeship.formats.openvino"], found
