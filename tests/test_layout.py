"""The repository's rooms: scripts at the root, the shared library in reid/, no import circle, and no
shared module that imports a stage script. Read from the source with ast, so nothing is imported."""
import ast
import os

from conftest import ROOT

SCRIPTS = {"toy_data", "prepare", "prepare_Duke", "audit", "train", "test", "evaluate_gpu", "demo", "export"}
SHARED_AT_ROOT = {"model", "utils", "random_erasing"}   # the design card's shared files


def project_modules():
    """{module name: path} for the root's .py files and reid/'s modules."""
    found = {name[:-3]: os.path.join(ROOT, name) for name in os.listdir(ROOT) if name.endswith(".py")}
    package = os.path.join(ROOT, "reid")
    found.update({f"reid.{name[:-3]}": os.path.join(package, name) for name in os.listdir(package)
                  if name.endswith(".py") and name != "__init__.py"})
    return found


def imports_of(path, modules):
    """The project modules that ``path`` imports, at the top or inside functions."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & set(modules)


def import_graph():
    modules = project_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_the_root_holds_only_scripts_and_the_design_cards_shared_files():
    assert set(project_modules()) - {m for m in project_modules() if m.startswith("reid.")} == SCRIPTS | SHARED_AT_ROOT


def test_no_shared_module_imports_a_script():
    graph = import_graph()
    offenders = {name: sorted(graph[name] & SCRIPTS) for name in graph
                 if name not in SCRIPTS and graph[name] & SCRIPTS}
    assert not offenders


def test_no_import_circle():
    graph = import_graph()
    state = {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph[name]):
            assert state.get(target) != "open", f"import circle: {' -> '.join(path + [target])}"
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_every_module_says_its_one_concern_and_stays_small():
    for name, path in project_modules().items():
        with open(path) as handle:
            source = handle.read()
        docstring = ast.get_docstring(ast.parse(source))
        assert docstring and docstring.strip(), f"{name} has no docstring"
        assert source.count("\n") <= 340, f"{name} has {source.count(chr(10))} lines"


def test_scripts_share_code_through_the_package_not_each_other():
    graph = import_graph()
    allowed = {"prepare_Duke": {"prepare"}}   # the thin Duke wrapper selects prepare.py's benchmark
    reaching = {name: sorted(graph[name] & SCRIPTS - allowed.get(name, set())) for name in SCRIPTS}
    assert not any(reaching.values()), reaching
