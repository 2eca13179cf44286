"""Package boundaries and public API."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["losses", "augmentations"])
def test_standalone_packages_do_not_import_ssl_ecg(package):
    code = (f"import sys, {package}; bad = [m for m in sys.modules if m.split('.')[0] == 'ssl_ecg']; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("package", ["losses", "augmentations", "ssl_ecg", "ssl_ecg.data", "ssl_ecg.evaluate",
                                     "ssl_ecg.deploy"])
def test_all_names_exist(package):
    mod = __import__(package, fromlist=["__all__"])
    assert mod.__all__
    for name in mod.__all__:
        assert hasattr(mod, name), f"{package}.{name}"


def test_fixed_names_present():
    from ssl_ecg.data import load_index, read_record  # noqa: F401
    from ssl_ecg.data.index import DATASETS

    assert set(DATASETS) == {"ptbxl", "ludb", "cinc2020", "cinc2021", "cpsc2018", "chapman", "incart", "mitdb",
                             "cinc2017"}


# Layering, checked on the source (every import statement, lazy ones in functions included, followed transitively
# through first-party modules and the package __init__ files they run).
FIRST_PARTY = ("ssl_ecg", "augmentations", "losses")
FORBIDDEN = {  # layer -> first-party packages it must never import, directly or through another module
    "ssl_ecg.data": ("ssl_ecg.pretrain", "ssl_ecg.evaluate"),
    "ssl_ecg.evaluate": ("ssl_ecg.pretrain",),
    "ssl_ecg.deploy": ("ssl_ecg.pretrain",),
}
THIRD_PARTY_ONLY = {  # standalone package -> the only non-stdlib packages it may import
    "augmentations": {"torch", "numpy", "einops", "ecg_augmentations"},
    "losses": {"torch", "lightly"},
}


def _modules(root):
    """First-party module name -> (source file, is a package)."""
    out = {}
    for pkg in FIRST_PARTY:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _imports(name, path, is_pkg, known):
    """Absolute names a module imports (relative imports resolved; ``from a import b`` gives a and a.b if known)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known)
    return found


def _graph(root):
    """Module -> imported names, each with the parent packages that importing it runs (its own parents too)."""
    mods = _modules(root)
    graph = {}
    for name, (path, is_pkg) in mods.items():
        names = _imports(name, path, is_pkg, mods) | {name.rsplit(".", 1)[0]} - {name}
        graph[name] = {".".join(n.split(".")[: k + 1]) for n in names for k in range(n.count(".") + 1)} - {name}
    return graph


def _chain(graph, start):
    """First-party modules reachable from ``start`` -> the import chain that reaches them."""
    seen, todo = {start: [start]}, [start]
    while todo:
        mod = todo.pop()
        for dep in sorted(graph.get(mod, ())):
            if dep in graph and dep not in seen:
                seen[dep] = seen[mod] + [dep]
                todo.append(dep)
    return seen


def layer_violations(root):
    """One line per forbidden import (with its chain) under ``root``; empty when the layering holds."""
    graph = _graph(root)
    bad = []
    for layer, forbidden in FORBIDDEN.items():
        for mod in (m for m in graph if m == layer or m.startswith(layer + ".")):
            for dep, chain in _chain(graph, mod).items():
                if any(dep == f or dep.startswith(f + ".") for f in forbidden):
                    bad.append(f"{mod} imports {dep}: {' -> '.join(chain)}")
                    break
    for pkg, allowed in THIRD_PARTY_ONLY.items():
        for mod in (m for m in graph if m == pkg or m.startswith(pkg + ".")):
            for dep, chain in _chain(graph, mod).items():
                if dep.split(".")[0] != pkg:
                    bad.append(f"{mod} imports first-party {dep}: {' -> '.join(chain)}")
                    break
                outside = sorted({n.split(".")[0] for n in graph[dep]} - allowed - set(sys.stdlib_module_names)
                                 - {pkg})
                if outside:
                    bad.append(f"{dep} imports {outside}; {pkg} may import only {sorted(allowed)} and the stdlib")
    return sorted(set(bad))


def test_layering_of_the_source_tree():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert len(_modules(root)) > 40
    assert layer_violations(root) == []


def test_layering_scan_catches_direct_lazy_relative_and_transitive_imports(tmp_path):
    files = {
        "ssl_ecg/__init__.py": "",
        "ssl_ecg/utils.py": "def f():\n    from ssl_ecg.pretrain import run  # lazy\n",
        "ssl_ecg/data/__init__.py": "",
        "ssl_ecg/data/a.py": "from ..evaluate import b\n",  # relative, into evaluate
        "ssl_ecg/data/ok.py": "import numpy\nfrom ssl_ecg.data import a as _a  # noqa\n",
        "ssl_ecg/evaluate/__init__.py": "",
        "ssl_ecg/evaluate/b.py": "from ssl_ecg import utils\n",  # transitively pretrain
        "ssl_ecg/pretrain/__init__.py": "",
        "ssl_ecg/pretrain/run.py": "",
        "augmentations/__init__.py": "import scipy.signal\nfrom . import views\n",
        "augmentations/views.py": "import torch, einops\nimport ssl_ecg\n",
        "losses/__init__.py": "import lightly.loss\nimport os\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    bad = layer_violations(tmp_path)
    assert any(v.startswith("ssl_ecg.data.a imports ssl_ecg.evaluate") for v in bad)
    assert any(v.startswith("ssl_ecg.data.ok imports ssl_ecg.evaluate") for v in bad)  # through ssl_ecg.data.a
    assert "ssl_ecg.evaluate.b imports ssl_ecg.pretrain: ssl_ecg.evaluate.b -> ssl_ecg.utils -> ssl_ecg.pretrain" in bad
    assert any("augmentations imports ['scipy']" in v for v in bad)
    assert any(v.startswith("augmentations.views imports first-party ssl_ecg") for v in bad)
    assert not any(v.startswith("losses") for v in bad)
