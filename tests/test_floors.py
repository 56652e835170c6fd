"""The floors of ARCHITECTURE.md: every import inside widebayes runs down (or along), never up.

Walks the source with ``ast`` (imports at the top of a module and inside functions alike) and
fails on any arrow from a lower floor to a higher one, naming the file and the import.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"": ROOT / "src" / "widebayes", "models": ROOT / "models", "samplers": ROOT / "samplers"}

FLOORS = [
    {"__init__", "errors", "io", "quadrature", "activations", "codes", "networks", "base"},
    {"config", "tasks", "models", "samplers", "observables", "input_reduction", "checkpoint", "collapsed",
     "neuron_moves", "sign_flips", "interrupt", "footprint"},
    {"experiment", "inference", "posterior"},
    {"theory", "diagnostics"},
    {"sampling", "report", "plots"},
    {"studies", "bench", "bench_mixing", "sweep", "cli", "kernel_sweeps", "collapsed_bench"},
]
# facades kept for one release where a module moved up a floor (ARCHITECTURE.md): they only re-export
FACADES = {("diagnostics/frozen.py", "studies"), ("report/__init__.py", "studies")}


def floor_of(name: str) -> int:
    for level, names in enumerate(FLOORS):
        if name in names:
            return level
    raise AssertionError(f"widebayes.{name} is on no floor: "
                         "add it to FLOORS in this test (and to ARCHITECTURE)")


def module_files():
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            top = prefix or (rel.parts[0].removesuffix(".py") if rel.parts else "")
            yield path, (Path(prefix) / rel).as_posix(), top


def widebayes_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = ([node.module] + [f"{node.module}.{a.name}" for a in node.names]
                     if node.module == "widebayes" else [node.module])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "widebayes" and len(parts) > 1:
                yield parts[1]


def test_imports_run_down_the_floors():
    upward = []
    for path, rel, top in module_files():
        here = floor_of(top)
        for target in widebayes_imports(path):
            if target == "__version__":
                continue
            if floor_of(target) > here and (rel, target) not in FACADES:
                upward.append(f"{rel} (floor {here}) imports widebayes.{target} (floor {floor_of(target)})")
    assert not upward, "imports that run up a floor:\n" + "\n".join(upward)


def test_the_driver_imports_no_model_and_no_sampler_package():
    imports = set(widebayes_imports(SOURCES[""] / "inference.py"))
    assert not imports & {"models", "samplers", "experiment", "config"}, imports


def test_theory_imports_no_diagnostics():
    for path in (SOURCES[""] / "theory").rglob("*.py"):
        assert "diagnostics" not in set(widebayes_imports(path)), path
