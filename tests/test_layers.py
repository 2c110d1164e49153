"""The package's layers, read from its imports (every import statement, inside functions too):
common/ < nn/ < reports/ < lit/ < the application (config/, sweeps/ and the top-level modules),
each importing only from layers below it or its own, with no import circle anywhere."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "mnist_lit"
LAYERS = {"common": 0, "nn": 1, "reports": 2, "lit": 3}  # anything else: the application, 4
FORBIDDEN = {
    "common": {"torch", "lightning", "torchmetrics", "hydra", "omegaconf"},
    "nn": {"lightning", "torchmetrics", "hydra", "omegaconf"},
    "reports": {"lightning", "hydra", "omegaconf"},
    "lit": {"hydra", "omegaconf"},
}


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in PACKAGE.rglob("*.py")
    }


def _imports(path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """The package's modules that `path` imports, and the top-level names of all it imports."""
    ours, libraries = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
            names = submodules if len(submodules) == len(node.names) else {node.module, *submodules}
        elif isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        else:
            continue
        ours |= {name for name in names if name in modules}
        libraries |= {name.split(".")[0] for name in names}
    return ours, libraries


def _layer(module: str) -> tuple[str, int]:
    part = module.split(".")[1] if module.count(".") else ""
    return part, LAYERS.get(part, 4)


MODULES = _modules()
GRAPH = {module: _imports(path, MODULES) for module, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_layer_and_those_below(module):
    name, rank = _layer(module)
    ours, libraries = GRAPH[module]
    assert not libraries & FORBIDDEN.get(name, set()), f"{module} imports {libraries & FORBIDDEN[name]}"
    above = [other for other in ours if _layer(other)[1] > rank]
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
