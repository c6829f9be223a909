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

Every step of the tutorial (`tutorial/README.md`) on the toy dataset, in order: make and arrange the data,
train a small network, extract features, evaluate, and look at the rankings. The cells run the same commands
as `bash scripts/practical.sh`, so the run is called `toy_mobilenet` (the tutorial's own commands call theirs
`my_mobilenet`); the tutorial explains each step and asks the Quick Questions.

- **On Colab**: choose *Runtime → Change runtime type → GPU*, and paste the repository's git address (your
  course gives it) into `REPOSITORY` in the first code cell. Without a GPU every step runs on the CPU, and the
  training takes a few minutes.
- **On your own machine** (Linux, macOS, or WSL on Windows: the cells are bash): in the repository, run
  `bash scripts/setup_env.sh` (it makes `.venv`), `.venv/bin/pip install notebook`, and
  `.venv/bin/jupyter notebook tutorial/practical.ipynb`.
- **A shorter training**: add `os.environ["EPOCHS"] = "3"` to the first code cell.
- **After a kernel restart**, run the first two code cells again: they set the folder, the data and the GPU."""


SETUP = '''import os, subprocess, sys

REPOSITORY = ""   # on Colab: paste the repository's git address here (your course gives it)

if not os.path.exists("scripts/practical.sh"):
    if os.path.exists("../scripts/practical.sh"):   # opened from tutorial/
        os.chdir("..")
    elif REPOSITORY:
        if not os.path.isdir("reid-practical"):
            subprocess.run(["git", "clone", "--quiet", REPOSITORY, "reid-practical"], check=True)
        os.chdir("reid-practical")
    else:
        raise SystemExit("error: this notebook runs inside the reid-practical repository — "
                         "open it from there, or paste the repository's git address into REPOSITORY above")
print("working in", os.getcwd())'''

INSTALL = '''import importlib.util
import re

# Colab has its own torch and torchvision: keep them and install the rest (what is missing gets the pinned one).
rows = [row.split("#")[0].strip() for row in open("requirements.txt")]
kept = {name for name in ("torch", "torchvision") if importlib.util.find_spec(name) is not None}
wanted = [row for row in rows if row and re.split(r"[<>=!~\\[; ]", row)[0] not in kept]
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
    pictures = ["model/toy_mobilenet/train.jpg"] + [name for name in files if name.endswith(".png")]
    page = next(name for name in files if name.endswith(".html"))
    text = ("from IPython.display import Image, display\n\n"
            f"for picture in {pictures!r}:\n"
            "    print(picture)\n"
            "    display(Image(picture))\n"
            f'print("the error-analysis report: open {page} in a browser")\n'
            'if "google.colab" in sys.modules:   # the page needs the pictures beside it: download the folder zipped\n'
            "    import shutil\n"
            "    from google.colab import files\n\n"
            f'    files.download(shutil.make_archive("report", "zip", "{os.path.dirname(page)}"))')
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
