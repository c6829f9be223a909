"""tutorial/practical.ipynb is made of scripts/practical.sh's steps (scripts/notebook.py), and it runs top to
bottom. The run takes minutes: it is marked `practical`, so CI runs it with `bash scripts/run_tests.sh -m practical`
(the notebook extras, requirements-notebook.txt, installed first)."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("notebook_builder", os.path.join(ROOT, "scripts", "notebook.py"))
builder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(builder)


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


def test_the_notebook_is_up_to_date_with_practical_sh():
    assert read("tutorial/practical.ipynb") == builder.text(), "run: python scripts/notebook.py --write"


def test_every_step_of_practical_sh_is_a_cell_with_its_command():
    script = read("scripts/practical.sh")
    titles = re.findall(r'^step "([^"]+)"', script, re.M)
    cells = json.loads(read("tutorial/practical.ipynb"))["cells"]
    bash = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and c["source"][0] == "%%bash\n"]
    headings = ["".join(c["source"]).split("\n")[0] for c in cells if c["cell_type"] == "markdown"]
    assert len(bash) == len(titles) >= 10
    for title, code in zip(titles, bash):
        assert f"## {title}" in headings
        command = re.search(rf'^step "{re.escape(title)}" (.*?)$', script, re.M).group(1).rstrip("\\").strip()
        assert command in code and "step " not in code, title
    assert "TRAIN=(python train.py" in bash[titles.index("3. train")]   # the lines that build a step's command


def test_the_notebook_is_a_valid_notebook():
    nbformat = pytest.importorskip("nbformat", reason="pip install -r requirements-notebook.txt")
    nbformat.validate(nbformat.reads(read("tutorial/practical.ipynb"), as_version=4))


def copy_of_the_repository(target):
    """The repository's own files (tracked, or new and not ignored) copied to ``target``: no data, runs or results."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for path in filter(None, listed):
        if os.path.isfile(os.path.join(ROOT, path)):
            os.makedirs(os.path.join(target, os.path.dirname(path)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, path), os.path.join(target, path))
    return target


@pytest.mark.practical
def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install -r requirements-notebook.txt")
    nbclient = pytest.importorskip("nbclient", reason="pip install -r requirements-notebook.txt")
    work = copy_of_the_repository(tmp_path / "repo")
    notebook = nbformat.reads(read("tutorial/practical.ipynb"), as_version=4)
    # a short training is enough here: the practical's own test checks the scores of the full one
    monkeypatch.setenv("EPOCHS", "3")
    monkeypatch.setenv("GPU", "-1")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    monkeypatch.chdir(work / "tutorial")   # as Jupyter opens it: the set-up cell finds the repository above
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(work / "tutorial")}}).execute()
    printed = "".join(out.text for c in notebook.cells if c.cell_type == "code" for out in c.outputs
                      if out.get("name") == "stdout")   # progress bars on stderr would cut its lines
    assert re.search(r"^Rank@1:[\d.]+ Rank@5:[\d.]+ Rank@10:[\d.]+ mAP:[\d.]+$", printed, re.M), printed[-3000:]
    assert re.search(r"^epoch 3/3 ", printed, re.M), printed[-3000:]
    shown = [out for out in notebook.cells[-1].outputs if "image/png" in out.get("data", {})]
    assert len(shown) == 3
    for produced in ("model/toy_mobilenet/net_last.pth", "report/index.html", "duke_result.mat"):
        assert (work / produced).exists(), produced
