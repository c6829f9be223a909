"""Build docs/troubleshooting.md from the code itself, so it cannot drift.

Every ``UserError(what, fix)`` (and ``NameRuleError``) in the scripts and in reid/ becomes a row:
the start of the ``error:`` line the user sees, how to fix it, and the file that raises it.
Parts filled in at run time (paths, numbers) are shown as ``…``.

    python scripts/troubleshooting.py            # print the page
    python scripts/troubleshooting.py --write    # refresh docs/troubleshooting.md
"""
import argparse
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "troubleshooting.md")
INTRO = ("Every mistake the scripts recognise (a wrong path, a bad flag, a damaged file) ends the run with one "
         "line on stderr, `error: <what is wrong> — <how to fix it>`, and exit status 2; a traceback means a bug. "
         "The table lists every such line with its fix and the file that raises it; `…` stands for a path, "
         "name or number filled in at run time. This page is generated from the code by "
         "`python scripts/troubleshooting.py --write`, and a test (`tests/test_reference_docs.py`) fails when it "
         "no longer matches the code, so edit the `UserError(what, fix)` in the code, never this page.")
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


def cell(text):
    """Text for one Markdown table cell: on one line, | escaped, and a tag-like < escaped (a Markdown
    viewer would hide ``<identity>`` as an HTML tag)."""
    return re.sub(r"<(?=[A-Za-z/!?])", r"\\<", " ".join(text.split()).replace("|", "\\|"))


def table():
    lines = ["| the line starts `error:` … | how to fix it | raised in |", "|---|---|---|"]
    lines += [f"| {cell(what)} | {cell(fix)} | `{name}` |" for what, fix, name in collect()]
    return "\n".join(lines)


def page():
    """The whole of docs/troubleshooting.md."""
    return "\n\n".join(["# Troubleshooting: every `error:` line", INTRO, table()]) + "\n"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true",
                        help="write the page to docs/troubleshooting.md instead of printing it")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.write:
        print(page(), end="")
        return
    os.makedirs(os.path.dirname(PAGE), exist_ok=True)
    with open(PAGE, "w", encoding="utf-8") as handle:
        handle.write(page())
    print(f"wrote {os.path.relpath(PAGE, ROOT)}")


if __name__ == "__main__":
    main()
