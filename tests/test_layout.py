"""The package layout's rules (docs/extending.md, "Commands and libraries: one naming rule"):

* every command is a thin ``<verb>.py`` shell — ``build_parser()``, ``main(argv)``, an ``if
  __name__ == "__main__"`` guard, no work of its own — over one library module named for what it
  holds; a package's ``__main__.py`` is its command;
* no other module has a ``__main__`` guard, and no library module is named as a command's verb;
* ``ums_rep`` (the shared framework and UMS-Rep) names no other paper.

Read from the source (``ast``), nothing imported."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_prep", "ums_rep", "mt_unet")

# every command and the library module it calls (docs/extending.md's table)
COMMANDS = {
    "data_prep.prepare": "data_prep.preparation",
    "data_prep.phantoms.__main__": "data_prep.phantoms.layouts",
    "ums_rep.pretrain": "ums_rep.pretraining",
    "ums_rep.finetune": "ums_rep.experiment",
    "ums_rep.scan": "ums_rep.scanning",
    "ums_rep.denoise": "ums_rep.denoising",
    "ums_rep.predict": "ums_rep.inference",
    "ums_rep.report": "ums_rep.reporting",
    "ums_rep.plan": "ums_rep.reproduce_plan",
    "mt_unet.train": "mt_unet.experiment",
    "mt_unet.evaluate": "mt_unet.scoring",
}
SHELL = {"build_parser", "main"}  # what every command defines
MAX_CODE_LINES = 80  # a shell's code, docstrings and comments left out (today's largest: finetune's 67)
MAX_FUNCTION_LINES = 35  # any function of a shell but build_parser (today's longest: phantoms' main, 32)


def _modules() -> dict:
    """``{dotted name: path}`` of every module of the three packages."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), str(MODULES[name]))


def _has_main_guard(tree: ast.Module) -> bool:
    """A top-level ``if __name__ == "__main__":``."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = [n for n in (node.test.left, *node.test.comparators)]
            if {getattr(n, "id", None) for n in names} & {"__name__"} and \
                    {getattr(n, "value", None) for n in names} & {"__main__"}:
                return True
    return False


def _verb(command: str) -> str:
    parts = command.split(".")
    return parts[-2] if parts[-1] == "__main__" else parts[-1]


def _code_lines(source: str, tree: ast.Module) -> int:
    """Lines holding code: docstrings, comments and blank lines left out."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node) is not None:
            docs |= set(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    lines = source.splitlines()
    return sum(1 for i, line in enumerate(lines, 1)
               if line.strip() and not line.strip().startswith("#") and i not in docs)


def test_the_command_list_names_modules_that_exist():
    assert not set(COMMANDS) - set(MODULES), set(COMMANDS) - set(MODULES)
    assert not set(COMMANDS.values()) - set(MODULES), set(COMMANDS.values()) - set(MODULES)


def test_every_module_with_a_main_guard_is_a_listed_command():
    guarded = {name for name in MODULES if _has_main_guard(_tree(name))}
    assert guarded - set(COMMANDS) == set(), "a __main__ guard outside a listed command (a library is no command)"
    assert set(COMMANDS) - guarded == set(), "a listed command without its __main__ guard"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_a_thin_shell_over_its_library(command):
    source = MODULES[command].read_text()
    tree = ast.parse(source)
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert SHELL <= set(functions), f"{command}: a command defines build_parser() and main(argv)"
    assert [a.arg for a in functions["main"].args.args] == ["argv"], f"{command}: main(argv)"
    assert not [n.name for n in tree.body if isinstance(n, ast.ClassDef)], f"{command}: a class belongs in a library"
    long = {name: f.end_lineno - f.lineno + 1 for name, f in functions.items()
            if name != "build_parser" and f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES}
    assert not long, f"{command}: work in the shell ({long}); move it to {COMMANDS[command]}"
    assert _code_lines(source, tree) <= MAX_CODE_LINES, f"{command}: not a thin shell; its work is a library's"
    library = COMMANDS[command]
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert library in imported, f"{command} does not call its library {library}"


def test_no_library_is_named_as_a_command():
    verbs = {_verb(c) for c in COMMANDS}
    packages_run = {c.rsplit(".", 1)[0] for c in COMMANDS if c.endswith(".__main__")}  # python -m PACKAGE
    libraries = [name for name in MODULES if name not in COMMANDS and name not in packages_run]
    named = [name for name in libraries if name.split(".")[-1] in verbs]
    assert not named, f"library modules named as a command's verb: {named}"


def test_ums_rep_names_no_other_paper():
    pattern = re.compile(r"mt_unet|MT-UNet|MT_UNET|eye.gaze")
    found = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}" for path in sorted((ROOT / "ums_rep").rglob("*.py"))
             for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found


def test_only_start_runs_the_prologue():
    """``ums_rep.runs.start`` is the one place the run prologue's steps are called."""
    steps = {"resume_args", "distribution", "set_precision"}
    calls = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if called in steps:
                    calls.append((name, called))
    assert {name for name, _ in calls} <= {"ums_rep.runs"}, calls


LAYERS = ("data_prep", "ums_rep", "mt_unet")  # each imports only those before it


def _imports() -> dict:
    """``{module: {modules of the three packages it imports}}``, at any depth of its code (an
    import inside a function is an edge too: it is a cycle once both sides run)."""
    edges = {}
    for name in MODULES:
        found = set()
        for node in ast.walk(_tree(name)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            found |= {t for t in targets if t in MODULES and t != name}
        edges[name] = found
    return edges


def test_packages_import_only_the_layers_below_them():
    for name, targets in _imports().items():
        rank = LAYERS.index(name.split(".")[0])
        above = sorted(t for t in targets if LAYERS.index(t.split(".")[0]) > rank)
        assert not above, f"{name} imports {above}: a lower layer may not import a higher one ({' <- '.join(LAYERS)})"


def test_no_import_cycles():
    edges, state, cycles = _imports(), {}, []

    def visit(name, path):
        state[name] = "open"
        for target in sorted(edges[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_or_notebook_imports_what_it_does_not_use():
    """Unused imports, redefined names and unused locals (pyflakes' F401/F811/F841, by ruff) in the
    packages, the benchmarks, the tests and the notebooks' cells: each is a name a reader looks up
    for nothing (the notebooks' first cells imported nine, found 2026-12-07)."""
    import subprocess
    import sys
    found = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                            "--select", "F401,F811,F841", *PACKAGES, "benchmarks", "tests", "notebooks"],
                           cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0, found.stdout + found.stderr
