"""Shared fixtures: small toy datasets generated once per test session (seconds, no network)."""
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import toy_data  # noqa: E402  (needs the project root on sys.path)

SMALL = ["--train_ids", "6", "--test_ids", "5", "--images_per_camera", "2", "--distractors", "3",
         "--junk", "3", "--workers", "1"]


def list_images(folder):
    """Sorted base names of the image files directly in ``folder``."""
    from reid.images import is_image_file

    return sorted(name for name in os.listdir(folder) if is_image_file(name))


def snapshot(folder):
    """Every file and folder under ``folder`` with its size and modification time."""
    found = {}
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(parent, name)
            info = os.lstat(path)
            found[os.path.relpath(path, folder)] = (info.st_size, info.st_mtime_ns)
    return found


def one_error_line(err):
    """The single ``error: …`` line a stage printed on stderr (fails when there is more, or a traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def make_toy(folder, dataset, *extra):
    """Generate a toy dataset into ``folder``; returns its root (e.g. folder/Market)."""
    return toy_data.main(["--out", str(folder), "--dataset", dataset, *SMALL, *extra])


@pytest.fixture(scope="session")
def toy_market_source(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy"), "market")


@pytest.fixture(scope="session")
def toy_duke_source(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("toy"), "duke")


@pytest.fixture
def market_root(toy_market_source, tmp_path):
    """A private copy of the small toy Market set, free to modify."""
    return shutil.copytree(toy_market_source, tmp_path / "Market")


@pytest.fixture
def duke_root(toy_duke_source, tmp_path):
    return shutil.copytree(toy_duke_source, tmp_path / "DukeMTMC-reID")


def run_cli(main, argv, capsys):
    """Call a stage's main in-process as a user would; returns (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def pytest_configure(config):
    config.addinivalue_line("markers", "heavy: large backbones (seconds each on CPU); deselect with -m 'not heavy'")
    config.addinivalue_line("markers", "practical: README command (1) end to end (minutes); CI runs it with -m practical")
    config.addinivalue_line("markers", "slow: exports of the larger backbones (minutes); run them with -m slow")


@pytest.fixture(scope="session")
def prepared_market(toy_market_source, tmp_path_factory):
    """The small toy Market, arranged by prepare.py: returns its pytorch/ folder."""
    import prepare

    root = shutil.copytree(toy_market_source, tmp_path_factory.mktemp("prepared") / "Market")
    prepare.main(["--download_path", str(root)])
    return root / "pytorch"


@pytest.fixture(scope="session")
def prepared_duke(toy_duke_source, tmp_path_factory):
    import prepare_Duke

    root = shutil.copytree(toy_duke_source, tmp_path_factory.mktemp("prepared") / "DukeMTMC-reID")
    prepare_Duke.main(["--download_path", str(root)])
    return root / "pytorch"


@pytest.fixture(scope="session")
def trained_workdir(prepared_market, tmp_path_factory):
    """A folder whose model/toy/ holds a short mobilenet_v3 run on the small toy Market (enough epochs
    for the BatchNorm statistics to settle, so that features tell pictures apart). Batches of 4 at lr 0.02
    diverge on the way (validation loss 1e5 at epoch 2) and recover with the learning-rate drop; the
    tests need a trained run, not a good one, so --divergence warn lets it go on."""
    import train

    workdir = tmp_path_factory.mktemp("work")
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        train.main(["--data_dir", str(prepared_market), "--name", "toy", "--gpu_ids", "-1", "--backbone",
                    "mobilenet_v3", "--no_pretrained", "--batchsize", "4", "--num_workers", "0",
                    "--total_epoch", "5", "--lr", "0.02", "--divergence", "warn"])
    finally:
        os.chdir(previous)
    return workdir
