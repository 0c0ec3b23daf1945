"""The code layout (README "How the code is laid out"): imports run one way, read from the source.

scripts -> train -> evaluate / report / runs / fast (-> mt19937) -> util (-> matfiles) / models / config /
synthetic / provenance -> benchmarks / cli / fileio -> nothing of ours. A module may import only what LIBRARY lists for it; no module imports a script. A new
top-level module must be added here, so a later change cannot quietly add a cycle.
"""
import ast
import sys

import pytest

from conftest import ROOT

# module -> the modules of ours it may import (at any depth of its code, lazily or not)
LIBRARY = {
    "benchmarks": set(),
    "fileio": set(),
    "cli": {"benchmarks"},
    "config": {"cli", "benchmarks"},
    "synthetic": {"benchmarks", "cli"},
    "provenance": set(),
    "matfiles": {"cli"},
    "util": {"matfiles", "benchmarks"},
    "models": set(),
    "mt19937": set(),
    "fast": {"config", "mt19937"},
    "runs": {"util", "provenance", "cli", "fileio"},
    "report": {"util"},
    "studies": {"config"},
    "mining": set(),
    "evaluate": {"config", "util", "models", "fast", "runs", "fileio"},
    "train": {"config", "cli", "util", "models", "fast", "runs", "evaluate", "report", "synthetic", "fileio",
              "mining", "provenance"},
}
# entry points: may import any library module; no module imports them
SCRIPT_PATTERNS = ("train_*.py", "plot.py", "tune.py", "reproduce.py", "bench/*.py", "data/*.py")
THIRD_PARTY_OF_MODELS = {"torch", "FrEIA"}


def module_files() -> dict[str, list]:
    files = {name: [ROOT / f"{name}.py"] for name in LIBRARY if name != "models"}
    files["models"] = sorted((ROOT / "models").glob("*.py"))
    return files


def script_files() -> list:
    return sorted({p for pattern in SCRIPT_PATTERNS for p in ROOT.glob(pattern)})


def imported_top_names(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def ours(names: set[str]) -> set[str]:
    scripts = {p.stem for p in script_files()}
    return {n for n in names if n in LIBRARY or n in scripts}


def test_every_top_level_python_file_is_classified():
    scripts = {p for p in script_files()}
    unknown = [p.name for p in ROOT.glob("*.py") if p.stem not in LIBRARY and p not in scripts]
    assert not unknown, f"add {unknown} to LIBRARY (with what it may import) or to SCRIPT_PATTERNS"


@pytest.mark.parametrize("module", sorted(LIBRARY))
def test_library_imports_run_one_way(module):
    for path in module_files()[module]:
        found = ours(imported_top_names(path)) - {module}
        extra = found - LIBRARY[module]
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}; allowed: {sorted(LIBRARY[module])}"


def test_models_import_only_torch_and_freia():
    stdlib = set(sys.stdlib_module_names)
    for path in module_files()["models"]:
        outside = imported_top_names(path) - stdlib - {"models"} - THIRD_PARTY_OF_MODELS
        assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"


def test_allowed_imports_have_no_cycle():
    # depth-first: a cycle in LIBRARY would let two modules import each other through others
    state: dict[str, int] = {}

    def visit(name, trail):
        assert state.get(name) != 1, f"import cycle: {' -> '.join(trail + [name])}"
        if state.get(name) == 2:
            return
        state[name] = 1
        for dep in LIBRARY[name]:
            visit(dep, trail + [name])
        state[name] = 2

    for name in LIBRARY:
        visit(name, [])


def test_no_library_module_imports_a_script():
    scripts = {p.stem for p in script_files()}  # (tune.py reads the train_<DATASET>.py settings: a script may)
    for path in [p for files in module_files().values() for p in files]:
        found = imported_top_names(path) & scripts
        assert not found, f"{path.relative_to(ROOT)} imports the script(s) {sorted(found)}"


def test_only_train_holds_the_flow_training_loop():
    # the flow's backward pass and Trainer construction live in train.py alone (bench/ and tests
    # drive the Trainer; they do not re-implement it)
    for name, files in module_files().items():
        for path in files:
            if name not in ("train", "mining"):  # mining: the TMM relation network and mined features, not the flow
                assert ".backward(" not in path.read_text(), f"{path.relative_to(ROOT)} runs a backward pass"
