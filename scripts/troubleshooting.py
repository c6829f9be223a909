"""Build the tutorial's troubleshooting table from the code itself, so it cannot drift.

Every ``UserError(what, fix)`` (and ``NameRuleError``) in the scripts and in reid/ becomes a row:
the start of the ``error:`` line the user sees, how to fix it, and the file that raises it.
Parts filled in at run time (paths, numbers) are shown as ``…``.

    python scripts/troubleshooting.py            # print the table
    python scripts/troubleshooting.py --write    # refresh it in tutorial/README.md
"""
import argparse
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, "tutorial", "README.md")
START, END = "<!-- troubleshooting:start -->", "<!-- troubleshooting:end -->"
ERRORS = {"UserError", "NameRuleError"}
PACKAGE = "reid"   # the library the scripts share: its errors reach users too


def template(node):
    """The text of a string or f-string node, with every interpolation as '…'."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "…" for part in node.values)
    return "…"


def collect():
    """(what, fix, file) for every user-facing error in the scripts and the reid/ package, in file order."""
    rows = []
    sources = sorted(os.listdir(ROOT)) + sorted(f"{PACKAGE}/{name}" for name in os.listdir(os.path.join(ROOT, PACKAGE)))
    for name in sources:
        if not name.endswith(".py"):
            continue
        with open(os.path.join(ROOT, name)) as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ERRORS
                    and len(node.args) == 2):
                rows.append((node.lineno, template(node.args[0]), template(node.args[1]), name))
    return [(what, fix, name) for _, what, fix, name in sorted(rows, key=lambda row: (row[3], row[0]))]


def table():
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| the line starts `error:` … | how to fix it | raised in |", "|---|---|---|"]
    lines += [f"| {cell(what)} | {cell(fix)} | `{name}` |" for what, fix, name in collect()]
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="replace the table in tutorial/README.md")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.write:
        print(table())
        return
    with open(TUTORIAL) as handle:
        text = handle.read()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    with open(TUTORIAL, "w") as handle:
        handle.write(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    main()
