"""The project's shape, checked from the source: the dependency rule, one import namespace,
short functions, one root for the product's exceptions, and test modules that never import each other
and launch the agent and subscribe through the shared helpers (tests/support/agent.py).

The rule: agent -> engine <- train; tools (ganomaly-bench) -> the product; the unshipped
folders examples/ (the demo) and research/ (research and benchmark scripts) -> the product, and
research -> examples; never the reverse; torch only in train (and tools, examples, research).
Every import counts, including those inside functions, since a lazy import still runs on the
device that lacks the package. What ships in the wheel is the product and ganomaly-bench only.
"""

import ast
import os
import shutil

import pytest

from support.data import ROOT

PRODUCT = ("agent", "engine", "train", "tools")  # shipped, as ganomaly_edge.<package>
OUTSIDE = ("examples", "research")  # not shipped, run from the repository root
PACKAGES = PRODUCT + OUTSIDE
NAMESPACE = "ganomaly_edge"
# package -> what it may import from the project
ALLOWED = {"engine": {"engine"}, "agent": {"agent", "engine"}, "train": {"train", "engine"},
           "tools": {"tools", "agent", "engine", "train"},
           "examples": {"examples", "tools", "agent", "engine", "train"},
           "research": {"research", "examples", "tools", "agent", "engine", "train"}}
TORCH_ALLOWED = {"train", "tools", "examples", "research"}
MAX_FUNCTION_LINES = 60


def modules(root):
    """(package, dotted module name, path) of every Python file of the product's packages and the
    unshipped folders (these import as ``examples.demo``, not under the namespace)."""
    for pkg in PACKAGES:
        for dirpath, _, files in os.walk(os.path.join(root, pkg)):
            for f in sorted(files):
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                    if rel.endswith(".__init__"):
                        rel = rel[: -len(".__init__")]
                    yield pkg, (rel if pkg in OUTSIDE else f"{NAMESPACE}.{rel}"), path


def imports(path, module):
    """Absolute names imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse(open(path).read(), path)
    is_pkg = path.endswith("__init__.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name


def violations(root):
    out = []
    for pkg, module, path in modules(root):
        rel = os.path.relpath(path, root)
        for line, name in imports(path, module):
            top = name.split(".")[0]
            if top in PRODUCT:
                out.append(f"{rel}:{line}: imports {name!r}: use the {NAMESPACE}.{top} namespace")
            elif top in OUTSIDE:
                if top not in ALLOWED[pkg]:
                    out.append(f"{rel}:{line}: {pkg} imports {name} (allowed: {sorted(ALLOWED[pkg])})")
            elif top == NAMESPACE:
                target = name.split(".")[1] if "." in name else ""
                if target not in ALLOWED[pkg]:
                    out.append(f"{rel}:{line}: {pkg} imports {name} (allowed: {sorted(ALLOWED[pkg])})")
            elif top == "torch" and pkg not in TORCH_ALLOWED:
                out.append(f"{rel}:{line}: {pkg} imports torch (only train may: a Jetson has no torch)")
    return out


def long_functions(root, limit=MAX_FUNCTION_LINES):
    out = []
    for pkg, _, path in modules(root):
        if pkg in ("tools",) + OUTSIDE:  # ganomaly-bench and the unshipped scripts: not the service
            continue
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{os.path.relpath(path, root)}:{node.lineno} {node.name}: {n} lines")
    return out


def imports_of_test_modules(tests_dir):
    """Where a file under tests/ imports a test module (or conftest): what tests share lives in
    tests/support/, and fixtures in conftest.py are asked for by name."""
    names = {f[:-3] for f in os.listdir(tests_dir) if f.startswith("test_") and f.endswith(".py")} | {"conftest"}
    out = []
    for dirpath, _, files in os.walk(tests_dir):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                module = os.path.relpath(path, tests_dir)[:-3].replace(os.sep, ".")
                for line, name in imports(path, module):
                    if name.split(".")[0] in names:
                        out.append(f"{os.path.relpath(path, tests_dir)}:{line}: imports {name}: move what it needs "
                                   "to tests/support/")
    return out


def test_dependency_rule_holds():
    assert violations(ROOT) == []


def _copy_tree(tmp_path):
    dst = tmp_path / "tree"
    for pkg in PACKAGES:
        shutil.copytree(os.path.join(ROOT, pkg), dst / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.mark.parametrize("where,line,expect", [
    ("agent/decision.py", "    from ganomaly_edge.train import scoring\n", "agent imports ganomaly_edge.train"),
    ("engine/bundle.py", "from ..agent import config\n", "engine imports ganomaly_edge.agent"),
    ("train/loss.py", "from ganomaly_edge.tools import scene\n", "train imports ganomaly_edge.tools"),
    ("engine/preprocess.py", "    import torch\n", "engine imports torch"),
    ("agent/stats.py", "import engine\n", "use the ganomaly_edge.engine namespace"),
    ("agent/pipeline.py", "    from examples import scene\n", "agent imports examples"),
    ("tools/bench.py", "from research.elpv import split\n", "tools imports research"),
    ("engine/loader.py", "    from ganomaly_edge.research import elpv\n", "engine imports ganomaly_edge.research"),
    ("examples/demo.py", "    from research import elpv\n", "examples imports research"),
    ("research/elpv.py", "from agent import config\n", "use the ganomaly_edge.agent namespace"),
])
def test_dependency_check_catches_a_wrong_way_import(tmp_path, where, line, expect):
    tree = _copy_tree(tmp_path)
    path = tree / where
    src = path.read_text()
    # Indented lines go into a function (a lazy import), the others at the top.
    src = src + "\n\ndef _lazy():\n" + line if line.startswith(" ") else line + src
    path.write_text(src)
    found = violations(str(tree))
    assert any(expect in v for v in found), found


def test_no_test_module_imports_another():
    assert imports_of_test_modules(os.path.join(ROOT, "tests")) == []


def fixtures_defined_twice(tests_dir):
    """Where a test module defines a fixture conftest.py already gives (one broker, one scanner
    folder, one tiny model for every test)."""
    def fixtures(path):
        tree = ast.parse(open(path).read())
        return {n.name: n.lineno for n in tree.body if isinstance(n, ast.FunctionDef)
                and any("fixture" in ast.unparse(d) for d in n.decorator_list)}

    shared = fixtures(os.path.join(tests_dir, "conftest.py"))
    return [f"{f}:{line}: defines the fixture {name!r}, which tests/conftest.py gives"
            for f in sorted(os.listdir(tests_dir)) if f.startswith("test_") and f.endswith(".py")
            for name, line in fixtures(os.path.join(tests_dir, f)).items() if name in shared]


def test_no_test_module_redefines_a_shared_fixture(tmp_path):
    assert fixtures_defined_twice(os.path.join(ROOT, "tests")) == []
    (tmp_path / "conftest.py").write_text("import pytest\n\n\n@pytest.fixture\ndef broker():\n    pass\n")
    (tmp_path / "test_x.py").write_text("import pytest\n\n\n@pytest.fixture\ndef broker(tmp_path):\n    pass\n")
    assert fixtures_defined_twice(str(tmp_path)) == ["test_x.py:5: defines the fixture 'broker', which tests/conftest.py gives"]


@pytest.mark.parametrize("line", ["from test_deploy import directive\n", "    import conftest\n",
                                  "from test_agent_e2e import Subscriber  # noqa\n"])
def test_the_test_import_check_catches_one(tmp_path, line):
    tests = tmp_path / "tests"
    shutil.copytree(os.path.join(ROOT, "tests"), tests, ignore=shutil.ignore_patterns("__pycache__"))
    path = tests / "test_gpu_start.py"
    src = path.read_text()
    path.write_text(src + "\n\ndef _lazy():\n" + line if line.startswith(" ") else line + src)
    found = imports_of_test_modules(str(tests))
    assert len(found) == 1 and found[0].startswith("test_gpu_start.py:"), found


def own_agent_helpers(tests_dir):
    """Where a test module outside tests/support/ launches ``ganomaly_edge.agent.cli`` with its own
    Popen, or defines its own *Subscriber class: the launcher (start_agent) and the subscriber
    (Subscriber) live in tests/support/agent.py. A Popen that pipes the agent's stdout is the
    subject of its test (what the agent writes there) and stays."""
    out = []
    for dirpath, dirs, files in os.walk(tests_dir):
        dirs[:] = [d for d in dirs if d not in ("support", "__pycache__")]
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, tests_dir)
            for node in ast.walk(ast.parse(open(path).read(), path)):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Subscriber"):
                    out.append(f"{rel}:{node.lineno}: defines {node.name}: use support.agent.Subscriber")
                elif (isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == "Popen"
                      and "ganomaly_edge.agent.cli" in ast.unparse(node)
                      and not any(k.arg == "stdout" and ast.unparse(k.value).endswith("PIPE") for k in node.keywords)):
                    out.append(f"{rel}:{node.lineno}: launches ganomaly_edge.agent.cli itself: use "
                               "support.agent.start_agent")
    return out


def test_tests_launch_the_agent_and_subscribe_through_the_shared_helpers():
    assert own_agent_helpers(os.path.join(ROOT, "tests")) == []


@pytest.mark.parametrize("code,expect", [
    ('\n\ndef _launch(cfg):\n    return subprocess.Popen([sys.executable, "-m", "ganomaly_edge.agent.cli", '
     '"--config", cfg], cwd=ROOT, stderr=subprocess.DEVNULL)\n', "launches ganomaly_edge.agent.cli itself"),
    ("\n\nclass _PlantSubscriber:\n    pass\n", "defines _PlantSubscriber"),
])
def test_the_shared_helper_check_catches_one(tmp_path, code, expect):
    tests = tmp_path / "tests"
    shutil.copytree(os.path.join(ROOT, "tests"), tests, ignore=shutil.ignore_patterns("__pycache__"))
    path = tests / "test_gpu_start.py"
    path.write_text(path.read_text() + code)
    found = own_agent_helpers(str(tests))
    assert len(found) == 1 and found[0].startswith("test_gpu_start.py:") and expect in found[0], found


def exceptions_outside_the_root(module_names):
    """Exception classes defined in these modules that do not derive from the product's root."""
    import importlib
    import inspect

    from ganomaly_edge.engine.errors import GanomalyError

    out = []
    for name in module_names:
        mod = importlib.import_module(name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and issubclass(cls, BaseException) and not issubclass(cls, GanomalyError):
                out.append(f"{name}.{cls.__qualname__}")
    return out


def test_every_product_exception_derives_from_the_root():
    assert exceptions_outside_the_root(sorted(m for p, m, _ in modules(ROOT) if p in PRODUCT)) == []


def test_the_exception_check_catches_one(tmp_path, monkeypatch):
    (tmp_path / "stray_errors.py").write_text("from ganomaly_edge.agent.errors import AgentError\n\n\n"
                                              "class Fine(AgentError, ValueError):\n    pass\n\n\n"
                                              "class Stray(ValueError):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert exceptions_outside_the_root(["stray_errors"]) == ["stray_errors.Stray"]


def test_no_function_in_the_product_is_longer_than_60_lines():
    assert long_functions(ROOT) == []


def test_product_imports_as_one_namespace():
    import importlib

    for name in ("agent.cli", "engine", "train.cli", "tools.bench"):
        importlib.import_module(f"{NAMESPACE}.{name}")
    with pytest.raises(ImportError):
        importlib.import_module("agent.cli")  # no generic top-level name in site-packages


def wheel_modules(root):
    """The modules the wheel ships: every .py file directly in each package that pyproject.toml's
    [tool.setuptools] names, found through its package-dir, as setuptools' build_py lists them."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        conf = tomllib.load(f)["tool"]["setuptools"]
    dirs = conf.get("package-dir", {})
    out = {}
    for pkg in conf["packages"]:
        parent = max((p for p in dirs if pkg == p or pkg.startswith(p + ".")), key=len, default=None)
        rest = pkg[len(parent):].lstrip(".").split(".") if parent else pkg.split(".")
        folder = os.path.join(dirs[parent] if parent else "", *[r for r in rest if r])
        for f in sorted(os.listdir(os.path.join(root, folder))):
            if f.endswith(".py"):
                out[pkg if f == "__init__.py" else f"{pkg}.{f[:-3]}"] = os.path.join(folder, f)
    return out


def non_product_in_wheel(root):
    """Shipped modules that are not the product: anything outside agent/, engine/, train/ and
    tools/, and any module of tools/ that the ganomaly-bench command never imports."""
    shipped = wheel_modules(root)
    out = [f"{m} ({p})" for m, p in shipped.items() if p.split(os.sep)[0] not in PRODUCT]
    todo, reached = [f"{NAMESPACE}.tools.bench"], {f"{NAMESPACE}.tools"}
    while todo:
        m = todo.pop()
        if m in reached or m not in shipped:
            continue
        reached.add(m)
        tree = ast.parse(open(os.path.join(root, shipped[m])).read())
        names = [n for _, n in imports(os.path.join(root, shipped[m]), m)]
        names += [f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                  and not n.level for a in n.names]
        names += [f"{m.rsplit('.', 1)[0]}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                  and n.level == 1 and not n.module for a in n.names]
        todo += names
    out += [f"{m} ({p}): ganomaly-bench never imports it" for m, p in shipped.items()
            if m.startswith(f"{NAMESPACE}.tools") and m not in reached]
    return sorted(out)


def test_the_wheel_ships_only_the_product():
    shipped = wheel_modules(ROOT)
    assert f"{NAMESPACE}.tools.bench" in shipped and f"{NAMESPACE}.agent.cli" in shipped
    assert non_product_in_wheel(ROOT) == []


def test_the_wheel_check_catches_a_script_in_tools(tmp_path):
    tree = _copy_tree(tmp_path)
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tree / "pyproject.toml")
    shutil.copy(tree / "research" / "elpv.py", tree / "tools" / "elpv.py")
    assert non_product_in_wheel(str(tree)) == [
        f"{NAMESPACE}.tools.elpv ({os.path.join('tools', 'elpv.py')}): ganomaly-bench never imports it"]
