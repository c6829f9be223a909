"""The docs tell the truth and stay short: their commands parse, their links and files exist, their code
excerpts are the real code, the Quick Questions have answers, and the student's path stays readable."""
import glob
import importlib.util
import os
import re
import shlex

import pytest

from conftest import ROOT

STUDENT_PATH = ["README.md", "tutorial/README.md"]
DOCS = STUDENT_PATH + ["tutorial/answers.md"] + sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))
WORD_LIMITS = {"README.md": 2000, "tutorial/README.md": 4000}   # words of prose: code and printed output excluded
LONGEST_SENTENCE = 40   # words
ORIGINAL_QUESTIONS = {"1.1": 1, "1.2": 2, "1.3": 2, "2.1": 2, "4": 1}   # layumi's eight Quick Questions, by Part


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


GENERATED = {"docs/flags.md", "docs/troubleshooting.md"}   # written from the code by scripts/; their own tests check them
ALL = [(doc, script, words) for doc in DOCS if doc not in GENERATED for script, words in commands(read(doc))]


def test_the_docs_show_commands_for_every_stage():
    scripts = {script for _, script, _ in ALL}
    assert {"toy_data.py", "prepare.py", "prepare_Duke.py", "train.py", "test.py", "evaluate_gpu.py",
            "demo.py", "audit.py", "export.py"} <= scripts


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
    named = set(re.findall(r"`([\w./-]+\.(?:py|sh|md))`", text))
    here = os.path.dirname(os.path.join(ROOT, doc))
    missing = [name for name in named if not (os.path.exists(os.path.join(ROOT, name))
                                              or os.path.exists(os.path.join(here, name)))]
    assert not missing, f"{doc} names files that do not exist: {missing}"


def anchors(path):
    """GitHub's anchors for the headings of a Markdown file."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", strip_code(read(path)), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_points_at_a_file_and_heading_that_exist(doc):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", strip_code(read(doc))):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        if not os.path.exists(os.path.join(ROOT, resolved)):
            broken.append(f"{target} (no file {resolved})")
        elif anchor and (not resolved.endswith(".md") or anchor not in anchors(resolved)):
            broken.append(f"{target} (no heading #{anchor} in {resolved})")
    assert not broken, f"{doc}: broken links {broken}"


# --- the code the tutorial shows is the code that runs ------------------------------------------------

def excerpts(text):
    """(source path, code) for each ```python block announced by an `<!-- code: PATH -->` line."""
    return re.findall(r"<!-- code: ([\w./-]+) -->\n```python\n(.*?)\n```", text, re.S)


def test_the_tutorial_shows_the_real_code():
    shown = excerpts(read("tutorial/README.md"))
    assert len(shown) >= 5
    for path, code in shown:
        source = read(path).splitlines()
        lines = code.splitlines()
        starts = [i for i in range(len(source) - len(lines) + 1) if source[i:i + len(lines)] == lines]
        assert starts, (f"the tutorial's excerpt of {path} (starting {lines[0].strip()!r}) is no longer in the "
                        "source: copy the current lines into tutorial/README.md and check the text around it")


def test_an_edited_excerpt_is_caught():
    path, code = excerpts(read("tutorial/README.md"))[0]
    changed = code.replace("(", "( ", 1)
    assert changed not in read(path)


# --- Quick Questions ------------------------------------------------------------------------------------

def numbered_blocks(text, heading):
    """{part: [item, …]} for every numbered list that follows a heading such as '**Quick Questions 1.2**'."""
    blocks = {}
    for part, body in re.findall(heading + r"\n((?:\d+\. .*\n(?: {3}.*\n)*)+)", text):
        blocks[part] = re.split(r"^\d+\. ", body, flags=re.M)[1:]
    return blocks


def test_every_quick_question_has_an_answer():
    questions = numbered_blocks(read("tutorial/README.md"), r"\*\*Quick Questions ([\d.]+)\*\*")
    answers = numbered_blocks(read("tutorial/answers.md"), r"## Part ([\d.]+)")
    assert list(questions) == ["1.1", "1.2", "1.3", "2.1", "2.2", "3", "4"]
    for part, items in questions.items():
        assert len(answers.get(part, [])) == len(items), f"Part {part}: {len(items)} questions"


def test_the_original_eight_quick_questions_are_at_their_parts():
    questions = numbered_blocks(read("tutorial/README.md"), r"\*\*Quick Questions ([\d.]+)\*\*")
    original = {part: sum("*(original)*" in item for item in items) for part, items in questions.items()}
    assert {part: n for part, n in original.items() if n} == ORIGINAL_QUESTIONS


# --- the student's path stays short and plain -----------------------------------------------------------

def strip_code(text):
    return re.sub(r"```.*?```", "", re.sub(r"<!--.*?-->", "", text, flags=re.S), flags=re.S)


def prose(text):
    """The sentences a reader reads: no code blocks, tables, headings, pictures or link targets."""
    kept = []
    for line in strip_code(text).splitlines():
        if line.startswith(("|", "#", "![")):
            kept.append("")
            continue
        kept.append(re.sub(r"\]\([^)]*\)", "]", line))
    sentences = []
    for paragraph in re.split(r"\n\s*\n|\n\s*(?=[-*] |\d+\. )", "\n".join(kept)):
        flat = " ".join(paragraph.split())
        sentences += [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z`*(\"])", flat) if s]
    return sentences


@pytest.mark.parametrize("doc", STUDENT_PATH)
def test_the_students_path_is_short_and_plain(doc):
    sentences = prose(read(doc))
    words = sum(len(s.split()) for s in sentences)
    assert words <= WORD_LIMITS[doc], f"{doc} has {words} words of prose; the limit is {WORD_LIMITS[doc]}"
    long = [s for s in sentences if len(s.split()) > LONGEST_SENTENCE]
    assert not long, f"{doc}: sentences over {LONGEST_SENTENCE} words: {long}"


def test_a_long_sentence_is_caught():
    sentences = prose("Short one. Then " + "word " * 40 + "end.\n\n- A list item. Another one")
    assert [len(s.split()) for s in sentences] == [2, 42, 4, 2]


@pytest.mark.parametrize("doc", [doc for doc in DOCS if doc != "docs/reproducibility.md"])
def test_machine_trivia_lives_on_one_page(doc):
    """Instruction sets and CPU models are named in docs/reproducibility.md only (printed output may name them)."""
    text = " ".join(prose(read(doc)))
    assert not re.search(r"AVX|EPYC|Xeon|ATEN_CPU|ONEDNN", text), doc


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_speak_about_the_toolkit_not_its_making(doc):
    assert not re.search(r"\bsessions?\b|sessions? that built", read(doc), re.I), doc


def test_the_colab_line_installs_every_requirement_but_torch():
    line = re.search(r"pip install \$\(grep -v '\^torch' requirements.txt \| sed 's/#\.\*//'\)", read("docs/reproducibility.md"))
    assert line, "docs/reproducibility.md's Colab line changed: update this test"
    kept = [re.sub(r"#.*", "", row).strip() for row in read("requirements.txt").splitlines() if not row.startswith("torch")]
    names = {re.split(r"[<>=]", row)[0] for row in kept if row}
    assert {"imagehash", "pytorch-metric-learning", "timm", "pretrainedmodels", "six"} <= names
    assert not {name for name in names if name.startswith("torch")}


# --- the quoted toy scores ---------------------------------------------------------------------------

TOY_ROWS = {"market": "(command 1) | toy Market", "rerank": "re-ranking | toy Market", "duke": "cross-dataset | toy DukeMTMC-reID"}


def quoted_toy_ranges():
    """The README's toy results: {row: ((Rank@1 low, high), (mAP low, high))}, as fractions."""
    quoted = {}
    for key, marker in TOY_ROWS.items():
        row = next(line for line in read("README.md").splitlines() if marker in line)
        low1, high1, low2, high2 = (int(n) / 100 for n in re.findall(r"\| (\d+)–(\d+) \| (\d+)–(\d+) \|", row)[0])
        quoted[key] = ((low1, high1), (low2, high2))
    return quoted


def test_the_tutorials_printed_scores_lie_in_the_readmes_ranges():
    tutorial, readme = read("tutorial/README.md"), read("README.md")
    printed = {key: re.search(rf"{re.escape(after)}[\s\S]*?^ *Rank@1:([\d.]+) .* mAP:([\d.]+)$", tutorial, re.M)
               for key, after in (("market", "--multi\n```"), ("rerank", "--rerank\n```"), ("duke", "duke_result.mat\n  ```"))}
    for key, ((low1, high1), (low2, high2)) in quoted_toy_ranges().items():
        rank1, mAP = (float(v) for v in printed[key].groups())
        assert low1 <= rank1 <= high1 and low2 <= mAP <= high2, key
    for line in re.findall(r"^Rank@1:.*$", readme, re.M):
        assert line in tutorial


def test_the_recipes_benchmark_trains_the_practicals_recipe():
    """benchmarks/recipes.py's baseline is the practical's own command, flag for flag."""
    script = read("scripts/practical.sh")
    command = re.search(r"TRAIN=\(python train.py (.*?)\)\n", script, re.S).group(1)
    words = [re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", word)   # ${EPOCHS:-15}: the value when unset
             for word in shlex.split(command.replace("\n", " "))]
    practical = {word: (words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else True)
                 for i, word in enumerate(words) if word.startswith("--")}
    spec = importlib.util.spec_from_file_location("bench_recipes", os.path.join(ROOT, "benchmarks", "recipes.py"))
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    ours = recipes.PRACTICAL
    for flag in ("--backbone", "--lr", "--warm_epoch"):
        assert practical[flag] == ours[ours.index(flag) + 1], flag
    assert practical["--no_pretrained"] is True and "--no_pretrained" in ours
    assert practical["--batchsize"] == str(recipes.build_parser().get_default("batchsize"))
    assert practical["--total_epoch"] == str(recipes.build_parser().get_default("total_epoch"))
