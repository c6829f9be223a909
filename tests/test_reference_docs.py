"""The generated reference pages in docs/ match the code: docs/flags.md the stage scripts' parsers,
docs/troubleshooting.md the code's ``error:`` lines, each of which says in words how to fix it."""
import argparse
import importlib.util
import os
import re

from conftest import ROOT


def load_script(path):
    spec = importlib.util.spec_from_file_location(f"reference_{path.replace('/', '_')[:-3]}", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


FLAGS = load_script("scripts/flags.py")
TROUBLESHOOTING = load_script("scripts/troubleshooting.py")


def test_flags_page_matches_the_parsers():
    assert read("docs/flags.md") == FLAGS.page(), "run: python scripts/flags.py --write"


def test_flags_page_check_bites_when_a_flag_is_added(monkeypatch):
    """A flag added to one parser changes the page, so the test above fails until the page is rewritten."""
    real_load = FLAGS.load

    def load_with_a_new_flag(script):
        module = real_load(script)
        if script == "export.py":
            build = module.build_parser

            def build_parser():
                parser = build()
                parser.add_argument("--brand_new_flag", type=int, default=7, help="a flag the page does not know")
                return parser

            module.build_parser = build_parser
        return module

    monkeypatch.setattr(FLAGS, "load", load_with_a_new_flag)
    changed = FLAGS.page()
    assert changed != read("docs/flags.md")
    assert "| `--brand_new_flag` | `7` | a flag the page does not know |" in changed.split("## python export.py")[1]


def test_flags_table_shows_every_kind_of_option():
    parser = argparse.ArgumentParser(prog="x.py")
    parser.add_argument("--switch", action="store_true", help="a switch")
    parser.add_argument("-k", "--kind", choices=["a", "b"], default="a", help="50%% of a | b")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--left", default=argparse.SUPPRESS, help="one side")
    group.add_argument("--right", help="<other> side")
    lines = FLAGS.table(parser).splitlines()
    assert lines[0] == "| flag | default | help |" and len(lines) == 2 + 4   # -h/--help is left out
    assert lines[2] == "| `--switch` | off | a switch |"
    assert lines[3] == "| `-k`, `--kind` | `a` | 50% of a \\| b; choices: `a`, `b` |"
    assert lines[4] == "| `--left` | — | one side; not with --right |"
    assert lines[5] == "| `--right` | — | \\<other> side; not with --left |"


def test_flags_page_has_no_machine_dependent_default():
    text = FLAGS.page()
    assert f"`{min(4, os.cpu_count() or 1)}` | data-loading" not in text
    assert "| `--num_workers` | `min(4, os.cpu_count() or 1)` | data-loading processes |" in text


def test_flags_page_index_links_every_heading():
    text = read("docs/flags.md")
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == [f"python {script}" for script in FLAGS.SCRIPTS]
    for heading in headings:
        assert f"[{heading}]({FLAGS.anchor(heading)})" in text


def test_troubleshooting_page_matches_the_code():
    assert read("docs/troubleshooting.md") == TROUBLESHOOTING.page(), "run: python scripts/troubleshooting.py --write"
    assert len(TROUBLESHOOTING.collect()) > 40


def test_every_troubleshooting_row_says_how_to_fix_it_in_words():
    """A fix that is only run-time parts (shown as …) tells the reader of the page nothing."""
    vague = [(what, fix, name) for what, fix, name in TROUBLESHOOTING.collect()
             if len([word for word in fix.replace("…", " ").split() if re.search(r"[A-Za-z]", word)]) < 2]
    assert not vague, f"fixes without words of their own (write them in the UserError): {vague}"
