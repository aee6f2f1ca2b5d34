"""The layout of `kerasimpl`: its import graph (no circles, nothing from `experiments`), where private Keras
APIs and the backends' own packages may be imported, and how long a module may grow.

Read from the source with `ast` (module-level and function-level imports
alike: an import inside a function is still a dependency), so the test
needs no backend and imports nothing it checks.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "kerasimpl"

KNOWN_CYCLES = set()  # none: keep it so


def modules(package=PACKAGE) -> dict:
    """Dotted module name -> path, for every `.py` file of `package`."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_names(module, path) -> set:
    """Every dotted name `module` imports, anywhere in its source."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def dependencies(module, path, known) -> set:
    """The modules of `known` that importing `module` runs.

    An import of `a.b.c` runs `a.b.c` and the packages `a.b` and `a` above
    it, except those that contain `module` (already running when it is
    imported).
    """
    deps = set()
    for name in imported_names(module, path):
        while name and name not in known:  # `from a.b import function`: the module a.b
            name = name.rpartition(".")[0]
        while name:
            if name != module and not module.startswith(name + "."):
                deps.add(name)
            name = name.rpartition(".")[0]
    return deps


def graph(package=PACKAGE) -> dict:
    known = modules(package)
    return {m: dependencies(m, p, known) for m, p in known.items()}


def cycles(edges) -> list:
    """The strongly connected components of more than one module (Tarjan), each a frozenset."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_function_level_imports_and_packages(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import numpy\n\ndef f():\n    from kerasimpl.saliency.cam import GradCAM\n")
    known = modules()
    assert dependencies("kerasimpl.probe", source, known) == {"kerasimpl.saliency.cam", "kerasimpl.saliency"}
    # Within a package, its own __init__ is already running: not an edge.
    assert dependencies("kerasimpl.saliency.probe", source, known) == {"kerasimpl.saliency.cam"}
    assert "kerasimpl.backend.torch.inference" in graph()["kerasimpl.backend.torch"]  # imported inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_no_import_circles_in_kerasimpl():
    found = [sorted(c) for c in cycles(graph()) if c not in KNOWN_CYCLES]
    assert not found, f"import circles (each: modules that import each other, directly or not): {found}"


def test_kerasimpl_never_imports_experiments():
    known = modules()
    bad = {m: sorted(n for n in imported_names(m, p) if n == "experiments" or n.startswith("experiments."))
           for m, p in known.items()}
    assert not {m: n for m, n in bad.items() if n}


# Model builders (keras-hub's rule): a checkpoint is ported by `backbones.build_backbone`, never by a builder
# (no converter import anywhere in a builder, module level or inside a function).
BUILDERS = ("kerasimpl.alexnet", "kerasimpl.efficientnet_lite", "kerasimpl.mobilenet_v2_torchvision",
            "kerasimpl.builders")
CONVERTERS = "kerasimpl.checkpoints"
# Keras' private API lives in one module (kerasimpl.compat); a use anywhere else fails. No module imports
# keras.src at all since the JAX fast path swaps its depthwise layers through keras.models.clone_model.
KERAS_SRC_ALLOWED = set()
# The private attributes kerasimpl.compat wraps: reached (`x._name`) or named as a string anywhere else, they fail.
PRIVATE_KERAS_ATTRIBUTES = {"_nodes_by_depth", "_functional", "_keras_history", "_inbound_nodes", "_initial_epoch",
                            "_loss_tracker", "_value", "_layout"}


def keras_src_uses(path) -> set:
    """The `keras.src...` names `path` imports or reaches as an attribute (`keras.src.x`), anywhere in it."""
    tree = ast.parse(path.read_text(), str(path))
    names = {n for n in imported_names("probe", path) if n == "keras.src" or n.startswith("keras.src.")}
    names.update("keras.src" for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "src"
                 and isinstance(node.value, ast.Name) and node.value.id == "keras")
    return names


def test_the_layout_checks_see_a_converter_import_and_keras_src(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import keras\n\ndef f():\n    from kerasimpl.checkpoints.core import port\n"
                      "    return keras.src.ops\n")
    assert "kerasimpl.checkpoints.core" in dependencies("kerasimpl.alexnet", source, modules())
    assert keras_src_uses(source) == {"keras.src"}
    source.write_text("from keras.src.backend.jax import nn\n")
    assert keras_src_uses(source) == {"keras.src.backend.jax", "keras.src.backend.jax.nn"}


def test_model_builders_import_no_converter():
    known = modules()
    bad = {m: sorted(d for d in dependencies(m, known[m], known) if d == CONVERTERS or d.startswith(CONVERTERS + "."))
           for m in BUILDERS}
    assert not {m: d for m, d in bad.items() if d}, "builders import converters (go through build_backbone)"


def private_attributes(path) -> set:
    """The names of PRIVATE_KERAS_ATTRIBUTES `path` reaches as an attribute or spells as a string."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_KERAS_ATTRIBUTES:
            found.add(node.attr)
        elif isinstance(node, ast.Constant) and node.value in PRIVATE_KERAS_ATTRIBUTES:
            found.add(node.value)
    return found


def test_keras_private_api_only_in_the_compat_module():
    paths = {**modules(), **modules("experiments")}
    assert {m for m, p in paths.items() if keras_src_uses(p)} == KERAS_SRC_ALLOWED
    elsewhere = {m: sorted(private_attributes(p)) for m, p in paths.items() if m != "kerasimpl.compat"}
    assert not {m: a for m, a in elsewhere.items() if a}, "private Keras attributes outside kerasimpl.compat"
    assert private_attributes(paths["kerasimpl.compat"]) == PRIVATE_KERAS_ATTRIBUTES  # the check sees them


# The backends' own packages are imported only by the backend seam, kerasimpl.backend (issue 33 item 2): the rest
# of kerasimpl is Keras and NumPy. Each exception says why it needs one whatever Keras' backend is.
BACKEND_PACKAGES = {"torch", "torchvision", "jax", "jaxlib", "tensorflow"}
SEAM = "kerasimpl.backend"
BACKEND_IMPORT_EXCEPTIONS = {
    "kerasimpl.checkpoints.core": "reads and writes torch checkpoints (.pth, torch.load/torch.save): torch's file "
                                  "format, ported into Keras on any backend",
    "kerasimpl.saliency.reference": "runs the torch reference libraries (Captum, pytorch-grad-cam, torchcam) on a "
                                    "Keras model, to test and time kerasimpl's saliency methods against them",
}


def backend_imports(path) -> set:
    """The packages of BACKEND_PACKAGES that `path` imports, anywhere in it (`import torch.distributed` is torch)."""
    return {n.split(".")[0] for n in imported_names("probe", path)} & BACKEND_PACKAGES


def test_the_backend_import_check_sees_function_level_and_submodule_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import numpy\n\ndef f():\n    import torch.distributed as dist\n"
                      "    from jax import lax\n    from kerasimpl.backend import torch\n")
    assert backend_imports(source) == {"torch", "jax"}


def test_backend_packages_only_in_the_backend_seam():
    known = modules()
    outside = {m: sorted(backend_imports(p)) for m, p in known.items()
               if m != SEAM and not m.startswith(SEAM + ".") and m not in BACKEND_IMPORT_EXCEPTIONS}
    assert not {m: n for m, n in outside.items() if n}, "torch/JAX/TensorFlow imported outside kerasimpl.backend"
    assert all(backend_imports(known[m]) for m in BACKEND_IMPORT_EXCEPTIONS), "an exception that no longer needs it"
    assert {"torch", "jax", "tensorflow"} <= set().union(*(backend_imports(p) for m, p in known.items()
                                                           if m.startswith(SEAM + ".")))  # the check sees them


MAX_MODULE_LINES = 400  # issue 33 item 9 (STYLE.md: under ~300 is the aim)


def test_no_module_over_400_lines():
    lengths = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    assert not {m: n for m, n in lengths.items() if n > MAX_MODULE_LINES}, f"modules over {MAX_MODULE_LINES} lines"


# Issue 33 item 4: training and comparison return results; what a run keeps is written through the run layer's
# folders (kerasimpl.run_folder), so these modules reach no file writer and open no file.
RETURNS_ONLY = ("kerasimpl.training", "kerasimpl.comparison")
WRITERS = {"write_json", "write_csv", "write_text", "save_model", "save_weights", "save_figure", "atomic_path",
           "open", "savez", "save"}


def writer_calls(path) -> set:
    """The names of WRITERS that `path` calls (`f(...)` or `x.f(...)`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in WRITERS:
                found.add(name)
    return found


def test_the_writer_check_sees_calls(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import numpy as np\n\ndef f(m, p):\n    np.savez(p)\n    m.save(p)\n"
                      "    with open(p, 'w'):\n        pass\n")
    assert writer_calls(source) == {"savez", "save", "open"}


def test_training_and_comparison_write_through_the_run_folder():
    known = modules()
    assert {m: sorted(writer_calls(known[m])) for m in RETURNS_ONLY if writer_calls(known[m])} == {}
    assert {"save_model", "save_weights", "write_json", "save_figure"} <= writer_calls(known["kerasimpl.run_folder"])
