"""Build tutorial/practical.ipynb, the practical as a notebook (Colab or Jupyter), from scripts/practical.sh.

practical.sh is the one source of the steps: each ``step "TITLE" COMMAND`` becomes a heading and a ``%%bash``
cell running COMMAND (with the lines that prepare it, such as the training command's array), and each comment
above a step becomes text. The notebook adds only what a notebook needs: finding the repository, installing
the requirements into the kernel's Python (Colab keeps its own torch, as the tutorial says), choosing the GPU
when there is one, and showing the pictures at the end. A test (`tests/test_notebook.py`) fails when the
notebook no longer matches practical.sh, and CI runs the notebook top to bottom on the toy set.

    python scripts/notebook.py            # print the notebook
    python scripts/notebook.py --write    # refresh tutorial/practical.ipynb
"""
import argparse
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "practical.sh")
NOTEBOOK = os.path.join(ROOT, "tutorial", "practical.ipynb")
STEP = re.compile(r'^step "([^"]+)" (.*)$', re.S)

INTRO = """# Person re-identification: the practical as a notebook

Every step of [the tutorial](README.md) on the toy dataset, in order: make and arrange the data, train a
small network, extract features, evaluate, and look at the rankings. The cells run the same commands as
`bash scripts/practical.sh`; the tutorial explains each one and asks the Quick Questions.

On **Colab**, choose *Runtime → Change runtime type → GPU* first; without a GPU every step runs on the CPU
(the training takes a few minutes). On your own machine, open this notebook from the repository."""

SETUP = '''import os, subprocess, sys

REPOSITORY = ""   # on Colab: the repository's git address, e.g. https://github.com/<course>/reid-practical.git

if not os.path.exists("scripts/practical.sh"):
    if os.path.exists("../scripts/practical.sh"):   # opened from tutorial/
        os.chdir("..")
    elif REPOSITORY:
        if not os.path.isdir("reid-practical"):
            subprocess.run(["git", "clone", "--quiet", REPOSITORY, "reid-practical"], check=True)
        os.chdir("reid-practical")
    else:
        raise SystemExit("error: this notebook runs inside the reid-practical repository — "
                         "open it from there, or set REPOSITORY above to its git address")
print("working in", os.getcwd())'''

INSTALL = '''import importlib.util

# Colab has its own torch: keep it and install the rest (a machine without torch gets the pinned one).
wanted = [row.split("#")[0].strip() for row in open("requirements.txt")]
keep_torch = importlib.util.find_spec("torch") is not None
wanted = [row for row in wanted if row and not (keep_torch and row.startswith("torch"))]
subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted], check=True)

import torch

os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]   # the cells' python
os.environ.setdefault("DATA", "data")
os.environ.setdefault("GPU", "0" if torch.cuda.is_available() else "-1")
print(f"torch {torch.__version__}; data in {os.environ['DATA']}/; --gpu_ids {os.environ['GPU']}")'''


def source(text):
    """A notebook cell's source: its lines, each but the last ending in a newline."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def cell(kind, key, text):
    made = {"cell_type": kind, "id": key, "metadata": {}, "source": source(text)}
    if kind == "code":
        made.update(execution_count=None, outputs=[])
    return made


def steps(script):
    """practical.sh after its set-up lines, as (step id, title, text above it, lines of the cell), in order;
    the closing remark (a printf) comes last with the step id "look"."""
    body = script[script.index("\nstep() ") + 1:].split("\n")[1:]
    found, remarks, code, index = [], [], [], 0
    while index < len(body):
        line = body[index]
        while line.endswith("\\") and index + 1 < len(body):   # a command continued on the next lines
            index += 1
            line += "\n" + body[index]
        index += 1
        match = STEP.match(line)
        if line.startswith("#"):
            remarks.append(line.lstrip("# "))
        elif match:
            title = match.group(1)
            found.append((title.split(". ")[0], title, remarks, code + [match.group(2)]))
            remarks, code = [], []
        elif line.startswith("printf "):
            found.append(("look", "look at the results", remarks, re.findall(r"[\w/]+\.(?:png|html)", line)))
        elif line.strip():
            code.append(line)
    return found


def look_cell(files):
    pictures = [name for name in files if name.endswith(".png")]
    pages = ", ".join(name for name in files if not name.endswith(".png"))
    text = ("from IPython.display import Image, display\n\n"
            f"for picture in {pictures!r}:\n"
            "    print(picture)\n"
            "    display(Image(picture))\n"
            f'print("the error-analysis report: open {pages} (on Colab: download the report folder from Files)")')
    return cell("code", "look", text)


def notebook():
    """The whole of tutorial/practical.ipynb, as a dict."""
    with open(SCRIPT, encoding="utf-8") as handle:
        found = steps(handle.read())
    cells = [cell("markdown", "intro", INTRO), cell("code", "setup", SETUP), cell("code", "install", INSTALL)]
    for key, title, remarks, lines in found:
        heading = "\n\n".join([f"## {title[0].upper()}{title[1:]}"] + [" ".join(remarks)] * bool(remarks))
        cells.append(cell("markdown", f"about-{key}", heading))
        cells.append(look_cell(lines) if key == "look" else cell("code", f"step-{key}", "%%bash\n" + "\n".join(lines)))
    return {"cells": cells,
            "metadata": {"accelerator": "GPU", "colab": {"provenance": []},
                         "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def text():
    return json.dumps(notebook(), indent=1, ensure_ascii=False) + "\n"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write tutorial/practical.ipynb instead of printing it")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.write:
        print(text(), end="")
        return
    with open(NOTEBOOK, "w", encoding="utf-8") as handle:
        handle.write(text())
    print(f"wrote {os.path.relpath(NOTEBOOK, ROOT)}")


if __name__ == "__main__":
    main()
