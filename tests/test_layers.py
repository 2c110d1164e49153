"""The package's layers, read from its imports (every import statement, relative ones and those
inside functions too, in mnist_lit/ and hydra_plugins/): common/ < nn/ < reports/ and web/ < lit/
(Lightning's layer) < config/ and sweeps/ < runs/ (the application) < the commands (the package's
own modules: its API, the entry points and their command-line plumbing, and Hydra's plugins), each
importing only from layers below it or its own, with no import circle anywhere; and what importing
a part loads."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = (ROOT / "mnist_lit", ROOT / "hydra_plugins")
LAYERS = {"common": 0, "nn": 1, "reports": 2, "web": 2, "lit": 3, "config": 4, "sweeps": 4, "runs": 5}
COMMANDS = 6  # the package's own modules, and Hydra's plugins
FORBIDDEN = {
    "common": {"torch", "lightning", "torchmetrics", "hydra", "omegaconf"},
    "nn": {"lightning", "torchmetrics", "hydra", "omegaconf"},
    "reports": {"lightning", "hydra", "omegaconf"},
    "lit": {"hydra", "omegaconf"},
    "web": {"lightning", "torchmetrics", "hydra", "omegaconf"},  # README: "no Lightning, no Hydra"
}
# What importing a module loads, with its packages' __init__ (imports inside functions wait).
LOADS_NONE_OF = {
    "mnist_lit": {"torch", "lightning", "hydra", "omegaconf"},
    "mnist_lit.nn.network": FORBIDDEN["nn"],
    "mnist_lit.nn.engine": FORBIDDEN["nn"],
    "mnist_lit.lit.module": FORBIDDEN["lit"],
    "mnist_lit.lit.fast": FORBIDDEN["lit"],
    "mnist_lit.lit.data": FORBIDDEN["lit"],
    "mnist_lit.web.app": FORBIDDEN["web"],
}


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for package in PACKAGES
        for path in package.rglob("*.py")
    }


class Imports(ast.NodeVisitor):
    """The modules a module names in its imports: (name, at import time or inside a function)."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, bool]] = []
        self.depth = 0

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(alias.name, self.depth == 0) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self.package.split(".")[: len(self.package.split(".")) - node.level + 1] if node.level else []
        module = ".".join([*base, *([node.module] if node.module else [])])
        # `from package import submodule` imports the package too, but names only the submodule.
        names = [f"{module}.{alias.name}" for alias in node.names]
        submodules = [name for name in names if name in MODULES]
        self.found += [(name, self.depth == 0) for name in (submodules if len(submodules) == len(names) else [module])]
        self.found += [(name, self.depth == 0) for name in submodules if len(submodules) < len(names)]


def _imports(module: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str], set[str], set[str]]:
    """Of the package's modules and of the libraries (top-level names) that `module` imports: all,
    and those it imports when it is imported."""
    visitor = Imports(module, path.name == "__init__.py")
    visitor.visit(ast.parse(path.read_text()))
    ours = {name for name, _ in visitor.found if name in modules}
    ours_now = {name for name, now in visitor.found if now and name in modules}
    libraries = {name.split(".")[0] for name, _ in visitor.found} - {"mnist_lit"}
    libraries_now = {name.split(".")[0] for name, now in visitor.found if now} - {"mnist_lit"}
    return ours, libraries, ours_now, libraries_now


def _layer(module: str) -> tuple[str, int]:
    part = module.split(".")[1] if module.count(".") and module.startswith("mnist_lit.") else ""
    return part, LAYERS.get(part, COMMANDS)


MODULES = _modules()
GRAPH = {module: _imports(module, path, MODULES) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_layer_and_those_below(module):
    name, rank = _layer(module)
    ours, libraries, _, _ = GRAPH[module]
    assert not libraries & FORBIDDEN.get(name, set()), f"{module} imports {libraries & FORBIDDEN[name]}"
    above = [other for other in ours if _layer(other)[1] > rank and other.startswith("mnist_lit.")]
    assert not above, f"{module} imports {above}, a layer above it"


def test_no_import_circle():
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for other in GRAPH[module][0]:
            assert other not in path, f"import circle: {' -> '.join([*path[path.index(other) :], other])}"
            if other not in done:
                visit(other, [*path, other])
        done.add(module)

    for module in MODULES:
        visit(module, [module])


def _loaded(module: str) -> tuple[set[str], set[str]]:
    """The package's modules and the libraries that importing `module` loads."""
    seen, libraries, todo = set(), set(), [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            if parent in MODULES and parent not in seen:
                seen.add(parent)
                libraries |= GRAPH[parent][3]
                todo += GRAPH[parent][2]
    return seen, libraries


@pytest.mark.parametrize("module", sorted(LOADS_NONE_OF))
def test_importing_a_part_loads_no_layer_above_it(module):
    modules, libraries = _loaded(module)
    assert not libraries & LOADS_NONE_OF[module], f"import {module} loads {libraries & LOADS_NONE_OF[module]}"
    rank = _layer(module)[1] if module.count(".") else 0
    above = sorted(other for other in modules if other.count(".") and _layer(other)[1] > max(rank, 0))
    assert not above or _layer(module)[0] == "web", f"import {module} loads {above}"


def test_no_module_sets_an_attribute_on_what_it_imported():
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        imported = {
            alias.asname or alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                    assert target.value.id not in imported, (
                        f"{module}:{node.lineno} sets {target.value.id}.{target.attr}"
                    )


@pytest.mark.slow
def test_the_parts_load_as_the_checks_above_read_them():
    """The static reading above, confirmed once by Python itself: the libraries' own imports too."""
    code = (
        "import sys, mnist_lit.nn.network, mnist_lit.web.app\n"
        "print(sorted({'hydra', 'lightning', 'omegaconf', 'torchmetrics'} & sys.modules.keys()))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "[]"


def test_every_package_installs():
    """pyproject lists the packages a wheel holds: one left out imports from a checkout alone."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module for module, path in MODULES.items() if path.name == "__init__.py"}
    assert found - listed == set(), "add them to pyproject's [tool.setuptools] packages"
