"""Build docs/flags.md, every flag of every stage script, from the scripts' own parsers, so it cannot drift.

Each stage script's ``build_parser()`` is called and its actions become a table: the option strings, the
default as ``--help`` shows it (``off`` for a switch, ``—`` for none) and the help text with the choices.
A default that depends on the machine (the CPU count) is shown as the expression that computes it, so
the page is the same on every machine.

    python scripts/flags.py            # print the page
    python scripts/flags.py --write    # refresh docs/flags.md
"""
import argparse
import ast
import importlib.util
import os
import re
import sys
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "flags.md")
SCRIPTS = ["toy_data.py", "prepare.py", "prepare_Duke.py", "audit.py", "train.py", "test.py", "evaluate_gpu.py",
           "demo.py", "export.py"]
CPU_COUNTS = (1, 64)   # a default that differs between these two machines depends on the machine
INTRO = ("Every flag of every stage script, with its default and its help. This page is generated from the "
         "scripts' own parsers by `python scripts/flags.py --write`, and a test (`tests/test_reference_docs.py`) "
         "fails when it no longer matches them, so edit the `help=` in the code, never this page. "
         "`off` is a switch that is off unless given; `—` means no default (the script decides, as the help "
         "says). `python X.py --help` shows the same on the command line.")


def load(script):
    """The stage script ``script`` as a module, imported from its file (the way tests/test_docs.py does)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)   # the scripts import utils, model and reid from the project root
    spec = importlib.util.spec_from_file_location(f"flags_{script[:-3]}", os.path.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine_expressions():
    """{flag: source text} of every ``add_argument`` default in the scripts and reid/ that reads the CPU count."""
    found = {}
    names = sorted(os.listdir(ROOT)) + sorted(f"reid/{name}" for name in os.listdir(os.path.join(ROOT, "reid")))
    for name in names:
        if not name.endswith(".py"):
            continue
        with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "add_argument" and node.args and isinstance(node.args[0], ast.Constant)):
                default = next((k.value for k in node.keywords if k.arg == "default"), None)
                if default is not None and "cpu_count" in ast.unparse(default):
                    found.setdefault(node.args[0].value, set()).add(ast.unparse(default))
    return {flag: texts.pop() for flag, texts in found.items() if len(texts) == 1}


def machine_dependent(build_parser):
    """The dests whose default changes with the CPU count: ``build_parser()`` run as on two machines."""
    defaults = []
    for count in CPU_COUNTS:
        with mock.patch.object(os, "cpu_count", lambda count=count: count):
            defaults.append({action.dest: action.default for action in build_parser()._actions})
    return {dest for dest, value in defaults[0].items() if defaults[1].get(dest) != value}


def cell(text):
    """Text for one Markdown table cell: on one line, | escaped, and < escaped outside `code` (where a
    Markdown viewer would take ``<identity>`` for an HTML tag and hide it)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    return "`".join(part if inside else re.sub(r"<(?=[A-Za-z/!?])", r"\\<", part)
                    for part, inside in zip(parts, [0, 1] * len(parts)))


def default_text(action, machine=(), expressions=None):
    """The default as ``--help`` shows it: ``off``/``on`` for switches, ``—`` for none, the expression for one
    that depends on the machine."""
    if isinstance(action, argparse._StoreTrueAction):
        return "off"
    if isinstance(action, argparse._StoreFalseAction):
        return "on"
    if action.required:
        return "required"
    if action.dest in machine:
        expression = next((expressions[flag] for flag in action.option_strings if flag in (expressions or {})),
                          "depends on this machine's CPU count")
        return f"`{expression}`"
    if action.default is None or action.default == argparse.SUPPRESS:
        return "—"
    return f"`{action.default}`" if action.default != "" else '`""`'


def help_text(parser, action, exclusive=()):
    """The help as ``--help`` prints it (``%%`` and ``%(prog)s`` expanded), then the choices and the flags
    it excludes."""
    text = argparse.HelpFormatter(parser.prog)._expand_help(action) if action.help else ""
    if action.choices is not None:
        text += f"; choices: {', '.join(f'`{choice}`' for choice in action.choices)}"
    if exclusive:
        text += f"; not with {', '.join(exclusive)}"
    return text.strip("; ")


def flag_text(action):
    """All option strings of one action (its aliases), and ``[METAVAR]`` when the value may be left out."""
    flags = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.metavar or action.dest}`"
    if action.nargs == "?":
        flags += f" `[{action.metavar or action.dest.upper()}]`"
    return flags


def table(parser, actions=None, machine=(), expressions=None):
    """The Markdown table of ``actions`` (default: every action of ``parser`` but -h/--help)."""
    actions = [a for a in (parser._actions if actions is None else actions) if not isinstance(a, argparse._HelpAction)]
    exclusive = {}
    for group in parser._mutually_exclusive_groups:
        for action in group._group_actions:
            exclusive[action] = [flag for other in group._group_actions if other is not action
                                 for flag in other.option_strings[-1:]]
    lines = ["| flag | default | help |", "|---|---|---|"]
    lines += [f"| {cell(flag_text(a))} | {cell(default_text(a, machine, expressions))} | "
              f"{cell(help_text(parser, a, exclusive.get(a, ())))} |" for a in actions]
    return "\n".join(lines)


def section(script, build_parser, expressions):
    """``## python SCRIPT``, its description, and one table per argument group, in ``--help``'s order."""
    parser = build_parser()
    machine = machine_dependent(build_parser)
    groups = [g for g in parser._action_groups if any(not isinstance(a, argparse._HelpAction) for a in g._group_actions)]
    covered = {a for g in groups for a in g._group_actions}
    missing = [a.dest for a in parser._actions if a not in covered and not isinstance(a, argparse._HelpAction)]
    assert not missing, f"{script}: flags outside every argument group: {missing}"
    parts = [f"## python {script}", cell(parser.description or "")]
    for group in groups:
        if group is not parser._optionals and group is not parser._positionals:
            title = f"**{cell(group.title)}**"
            parts.append(f"{title}: {cell(group.description)}" if group.description else title)
        parts.append(table(parser, group._group_actions, machine, expressions))
    return "\n\n".join(parts)


def anchor(heading):
    """GitHub's link target for a Markdown heading."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return "#" + kept.replace(" ", "-")


def page(scripts=SCRIPTS):
    """The whole of docs/flags.md."""
    expressions = machine_expressions()
    modules = {script: load(script) for script in scripts}
    index = [f"- [python {script}]({anchor(f'python {script}')}): "
             f"{cell(modules[script].build_parser().description or '')}" for script in scripts]
    sections = [section(script, modules[script].build_parser, expressions) for script in scripts]
    return "\n\n".join(["# Flags of the stage scripts", INTRO, "\n".join(index), *sections]) + "\n"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the page to docs/flags.md instead of printing it")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    text = page()
    if not args.write:
        print(text, end="")
        return
    os.makedirs(os.path.dirname(PAGE), exist_ok=True)
    with open(PAGE, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {os.path.relpath(PAGE, ROOT)}")


if __name__ == "__main__":
    main()
