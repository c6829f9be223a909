"""The README and the tutorial tell the truth: their commands parse, their files exist, the
troubleshooting table matches the code."""
import importlib.util
import os
import re
import shlex

import pytest

from conftest import ROOT

DOCS = ["README.md", "tutorial/README.md", "tutorial/answers.md"]


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


def commands(text):
    """Every `python SCRIPT.py …` in a text, with continuation lines joined and optional parts opened."""
    text = text.replace("\\\n", " ")
    found = []
    for match in re.finditer(r"python ([\w/]+\.py)((?: +[^\s`#]+)*)", text):
        words = []
        for word in shlex.split(match.group(2).replace("[", " ").replace("]", " ")):
            if word == "|":            # the end of a table cell
                break
            if word in ("…", "...") or word.startswith("…"):
                continue
            words.append(word.split("|")[0] if word.startswith("-") is False and "|" in word else word)
        found.append((match.group(1), words))
    return found


def load_script(path):
    spec = importlib.util.spec_from_file_location(f"doc_{path.replace('/', '_')[:-3]}", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ALL = [(doc, script, words) for doc in DOCS for script, words in commands(read(doc))]


def test_the_docs_show_commands_for_every_stage():
    scripts = {script for _, script, _ in ALL}
    assert {"toy_data.py", "prepare.py", "prepare_Duke.py", "train.py", "test.py", "evaluate_gpu.py",
            "demo.py"} <= scripts


@pytest.mark.parametrize("doc, script, words", ALL, ids=[f"{d}:{s}:{' '.join(w)[:40]}" for d, s, w in ALL])
def test_command_parses_with_the_real_parser(doc, script, words, capsys):
    parser = load_script(script).build_parser()
    try:
        parser.parse_args(words)
    except SystemExit as stop:
        if stop.code == 0:   # --help
            return
        pytest.fail(f"{doc}: `python {script} {' '.join(words)}` is refused: {capsys.readouterr().err.strip()}")


@pytest.mark.parametrize("doc", DOCS)
def test_named_files_exist(doc):
    text = read(doc)
    named = set(re.findall(r"`([\w./-]+\.(?:py|sh|md))`", text)) | set(re.findall(r"\]\(([\w./-]+\.md)\)", text))
    here = os.path.dirname(os.path.join(ROOT, doc))
    missing = [name for name in named if not (os.path.exists(os.path.join(ROOT, name))
                                              or os.path.exists(os.path.join(here, name)))]
    assert not missing, f"{doc} names files that do not exist: {missing}"


def test_troubleshooting_table_matches_the_code():
    table = load_script("scripts/troubleshooting.py")
    text = read("tutorial/README.md")
    block = text.split(table.START, 1)[1].split(table.END, 1)[0].strip()
    assert block == table.table(), "run: python scripts/troubleshooting.py --write"
    assert len(table.collect()) > 40


def test_every_quick_question_has_an_answer():
    questions = re.findall(r"\*\*Quick Questions (\d)\*\*\n((?:\d\. .*\n(?:   .*\n)*)+)", read("tutorial/README.md"))
    answers = dict(re.findall(r"## Part (\d)\n+((?:\d\. .*\n(?:   .*\n)*)+)", read("tutorial/answers.md")))
    assert len(questions) == 6
    for part, block in questions:
        count = len(re.findall(r"^\d\. ", block, re.M))
        assert part in answers and len(re.findall(r"^\d\. ", answers[part], re.M)) == count, f"part {part}"


TOY_ROWS = {"market": "(command 1) | toy Market", "rerank": "re-ranking | toy Market", "duke": "cross-dataset | toy DukeMTMC-reID"}


def quoted_toy_scores():
    """The README's toy results: {row: (Rank@1, mAP, (Rank@1 low, high), (mAP low, high))}, as fractions."""
    quoted = {}
    for key, marker in TOY_ROWS.items():
        row = next(line for line in read("README.md").splitlines() if marker in line)
        numbers = [round(float(n) / 100, 3) for n in re.findall(r"(\d+\.\d) %", row.replace("–", " % "))]
        rank1, mAP, rank1_low, rank1_high, map_low, map_high = numbers
        quoted[key] = (rank1, mAP, (rank1_low, rank1_high), (map_low, map_high))
    return quoted


def test_quoted_toy_scores_agree_between_readme_and_tutorial():
    """The README's table, its printed lines and the tutorial's printed lines are one run's numbers."""
    tutorial, readme = read("tutorial/README.md"), read("README.md")
    printed = {key: re.search(rf"{re.escape(after)}[\s\S]*?^Rank@1:([\d.]+) .* mAP:([\d.]+)$", tutorial, re.M)
               for key, after in (("market", "--multi\n```"), ("rerank", "--rerank\n```"), ("duke", "duke_result.mat\n```"))}
    for key, (rank1, mAP, rank1_range, map_range) in quoted_toy_scores().items():
        shown = tuple(float(v) for v in printed[key].groups())
        assert (round(shown[0], 3), round(shown[1], 3)) == (rank1, mAP), key
        assert rank1_range[0] <= rank1 <= rank1_range[1] and map_range[0] <= mAP <= map_range[1], key
    for line in re.findall(r"^Rank@1:.*$", readme, re.M):
        assert line in tutorial
