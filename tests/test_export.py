"""export.py: the toy run's graph passes the parity gate, ONNX Runtime's evaluation equals PyTorch's, a graph
that fails the gate is not kept, and the optional packages' absence is one line."""
import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch

import export
import test as stage4
from conftest import one_error_line, run_cli
from reid import onnx_export

# CI installs the optional extras (.ci/run); without them these tests say so instead of failing
needs_onnx = pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in onnx_export.PACKAGES),
                                reason="pip install -r requirements-export.txt to run the export tests")


@pytest.fixture(scope="module")
def exported(trained_workdir):
    """The toy run of ``trained_workdir`` exported once (the dynamo exporter takes about half a minute)."""
    previous = os.getcwd()
    os.chdir(trained_workdir)
    try:
        path = export.main(["--name", "toy"])
    finally:
        os.chdir(previous)
    return os.path.join(trained_workdir, path)


def reuse(monkeypatch, exported):
    """Let export.py take the fixture's graph instead of exporting again: the gate is what is under test."""
    monkeypatch.setattr(onnx_export, "export", lambda net, size, path, opset=18: shutil.copyfile(exported, path))


@needs_onnx
def test_the_export_passes_the_gate_on_the_runs_own_pictures(exported, trained_workdir, monkeypatch, capsys):
    assert os.path.getsize(exported) > 0 and exported.endswith("model/toy/model.onnx")
    monkeypatch.chdir(trained_workdir)
    reuse(monkeypatch, exported)
    code, out, err = run_cli(export.main, ["--name", "toy", "--output", "again.onnx"], capsys)
    assert code == 0, err
    gate = out.strip().splitlines()[-1]
    assert gate.startswith("parity on 8 pictures of ") and gate.split(" of ")[1].split(":")[0].endswith("query")
    lowest = float(gate.split("lowest cosine ")[1].split()[0])
    assert lowest >= onnx_export.MIN_COSINE


@needs_onnx
def scores_by_backend(backends, argv, folder, capsys):
    """{backend: the numbers of test.py's first score line (Rank@1 ... mAP)}, each run with ``argv`` and its
    .mat written in ``folder``."""
    scores = {}
    for backend in backends:
        code, out, err = run_cli(stage4.main, [*argv, "--num_workers", "0", "--backend", backend,
                                               "--output", os.path.join(folder, f"{backend}.mat")], capsys)
        assert code == 0, err
        layumi = next(line for line in out.splitlines() if line.startswith("Rank@1:"))
        scores[backend] = [float(part.split(":")[1]) for part in layumi.split()]
    return scores


def test_onnx_runtime_evaluates_as_pytorch_does(exported, trained_workdir, prepared_market, monkeypatch, capsys):
    monkeypatch.chdir(trained_workdir)
    scores = scores_by_backend(("torch", "onnxruntime"), ["--gpu_ids", "-1", "--name", "toy", "--test_dir",
                                                          prepared_market], trained_workdir, capsys)
    assert np.allclose(scores["torch"], scores["onnxruntime"], atol=1e-4), scores


class Constant:
    """An ONNX Runtime session that gives every picture the same feature (torchreid #316's failure)."""

    def run(self, _, feeds):
        pictures = next(iter(feeds.values()))
        return [np.tile(np.eye(1, 512, dtype=np.float32), (len(pictures), 1))]


@needs_onnx
@pytest.mark.parametrize("session, fragment", [(Constant, "gives different pictures the same feature"),
                                               (None, "disagrees with PyTorch")])
def test_a_graph_that_fails_the_gate_is_not_kept(exported, trained_workdir, monkeypatch, capsys, session, fragment):
    monkeypatch.chdir(trained_workdir)
    reuse(monkeypatch, exported)
    if session is None:   # a graph whose features are not PyTorch's: every picture's feature moved
        real = onnx_export.session

        class Shifted:
            def __init__(self, path):
                self.inner = real(path)

            def run(self, names, feeds):
                features = self.inner.run(names, feeds)[0]
                return [np.roll(features, 1, axis=1)]
        session = Shifted
    monkeypatch.setattr(onnx_export, "session", lambda path: session(path) if session is not Constant else Constant())
    code, _, err = run_cli(export.main, ["--name", "toy", "--output", "failed.onnx"], capsys)
    assert code == 2 and fragment in one_error_line(err)
    assert not [name for name in os.listdir(trained_workdir) if name.startswith("failed.onnx")]


def test_without_the_optional_packages_one_line_says_what_to_install(trained_workdir, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    monkeypatch.chdir(trained_workdir)
    code, _, err = run_cli(export.main, ["--name", "toy"], capsys)
    assert code == 2 and "pip install -r requirements-export.txt" in one_error_line(err)


@needs_onnx
def test_onnx_runtime_without_a_graph_says_how_to_make_it(trained_workdir, prepared_market, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.chdir(trained_workdir)
    code, _, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "toy", "--test_dir", prepared_market,
                                         "--backend", "onnxruntime", "--onnx", tmp_path / "none.onnx"], capsys)
    assert code == 2 and "export the run first with python export.py --name toy" in one_error_line(err)


def foreign_graph(path, name, dtype, shape):
    """A one-node ONNX graph (Identity) with one input ``name`` of ``dtype`` and ``shape``: another tool's model."""
    import onnx
    from onnx import helper

    kind = {"uint8": onnx.TensorProto.UINT8, "float": onnx.TensorProto.FLOAT}[dtype]
    graph = helper.make_graph([helper.make_node("Identity", [name], ["out"])], "foreign",
                              [helper.make_tensor_value_info(name, kind, shape)],
                              [helper.make_tensor_value_info("out", kind, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


@needs_onnx
@pytest.mark.parametrize("graph, fragment", [
    ("damaged", "is not an ONNX graph ONNX Runtime can load"),
    ("text", "is not an ONNX graph ONNX Runtime can load"),
    ("float input", "is not a graph export.py wrote for this run"),
    ("fixed batch", "is not a graph export.py wrote for this run"),
])
def test_a_damaged_or_foreign_graph_is_one_line(graph, fragment, exported, trained_workdir, prepared_market, tmp_path,
                                                 monkeypatch, capsys):
    path = str(tmp_path / "model.onnx")
    if graph == "damaged":   # a copy cut short, as by a full disk or an interrupted download
        with open(exported, "rb") as source, open(path, "wb") as target:
            target.write(source.read()[:5000])
    elif graph == "text":
        with open(path, "w") as target:
            target.write("not a graph\n")
    else:
        foreign_graph(path, *(("input", "float", ["batch", 3, 256, 128]) if graph == "float input"
                              else ("pictures", "uint8", [1, 3, 256, 128])))
    monkeypatch.chdir(trained_workdir)
    code, _, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "toy", "--test_dir", prepared_market,
                                         "--backend", "onnxruntime", "--onnx", path], capsys)
    line = one_error_line(err)
    assert code == 2 and fragment in line and "export it again: python export.py --name toy" in line


def export_agrees(name, tmp_path):
    """Export backbone ``name`` (random weights) and compare ONNX Runtime with PyTorch on 3 pictures."""
    import torch

    import model as models

    spec = models.get_backbone(name)
    net = models.build_model(name, 10, False).eval()
    onnx_export.export(net, spec.input_size, str(tmp_path / "net.onnx"))
    pictures = torch.randint(0, 256, (3, 3, *spec.input_size), dtype=torch.uint8)
    with torch.no_grad():
        expected = onnx_export.TestTimeNetwork(net).eval()(pictures).numpy()
    produced = onnx_export.session(str(tmp_path / "net.onnx")).run(None, {"pictures": pictures.numpy()})[0]
    assert produced.shape == expected.shape and (expected * produced).sum(1).min() >= onnx_export.MIN_COSINE


@needs_onnx
@pytest.mark.parametrize("name", ["resnet18", "pcb"])
def test_quick_backbones_export_with_a_dynamic_batch(name, tmp_path):
    export_agrees(name, tmp_path)


@needs_onnx
@pytest.mark.slow   # 20 s to 3 min each on 2 cores: bash scripts/run_tests.sh -m slow
@pytest.mark.parametrize("name", ["resnet50", "resnet50_ibn", "densenet121", "hrnet18", "efficientnet_b4",
                                  "swin", "swinv2", "convnext", "dino", "nasnet"])
def test_slower_backbones_export(name, tmp_path):
    export_agrees(name, tmp_path)


def test_torchscript_folds_the_batchnorms_passes_the_gate_and_evaluates_as_pytorch_does(trained_workdir,
                                                                                        prepared_market, tmp_path,
                                                                                        monkeypatch, capsys):
    monkeypatch.chdir(trained_workdir)
    code, out, err = run_cli(export.main, ["--name", "toy", "--format", "torchscript", "--output", tmp_path / "m.pt"],
                             capsys)
    assert code == 0, err
    folded = out.split("TorchScript, ")[1].split(" BatchNorm")[0]   # "35 of 35"
    assert folded.split(" of ")[0] == folded.split(" of ")[1] and int(folded.split(" of ")[1]) > 10
    assert float(out.split("lowest cosine ")[1].split()[0]) >= onnx_export.MIN_COSINE
    scores = scores_by_backend(("torch", "torchscript"), ["--gpu_ids", "-1", "--name", "toy", "--test_dir",
                                                          prepared_market, "--onnx", tmp_path / "m.pt"], tmp_path,
                               capsys)
    assert np.allclose(scores["torch"], scores["torchscript"], atol=1e-4), scores
    (tmp_path / "broken.pt").write_bytes(b"not a module")
    code, _, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "toy", "--test_dir", prepared_market,
                                         "--backend", "torchscript", "--onnx", tmp_path / "broken.pt"], capsys)
    assert code == 2 and "is not a TorchScript module export.py wrote" in one_error_line(err)


# TensorRT needs an NVIDIA GPU and the tensorrt package (from NVIDIA's index); CI has neither
has_tensorrt = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@needs_onnx
@pytest.mark.parametrize("lacking", ["TensorRT and GPU", "GPU", "TensorRT"])
def test_tensorrt_without_what_it_needs_is_one_line_that_names_it(lacking, trained_workdir, prepared_market,
                                                                   tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (None if "TensorRT" in lacking else object())
                        if name == "tensorrt" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: "GPU" not in lacking)
    monkeypatch.chdir(trained_workdir)
    for main, argv in ((export.main, ["--format", "tensorrt", "--output", tmp_path / "m.engine"]),
                       (stage4.main, ["--backend", "tensorrt", "--test_dir", prepared_market, "--gpu_ids", "-1",
                                      "--output", tmp_path / "m.mat"])):
        code, out, err = run_cli(main, ["--name", "toy", *argv], capsys)
        line = one_error_line(err)
        assert code == 2 and out == "" and "a TensorRT engine needs" in line and "--format onnx" in line, line
        assert ("TensorRT 10 or newer" in line) == ("TensorRT" in lacking), line
        assert ("an NVIDIA GPU with CUDA" in line) == ("GPU" in lacking), line
    assert os.listdir(tmp_path) == []


def fake_tensorrt(monkeypatch, version):
    """An importable ``tensorrt`` of ``version`` that can do nothing, and a GPU that seems present."""
    import importlib.machinery
    import types

    module = types.ModuleType("tensorrt")
    module.__spec__, module.__version__ = importlib.machinery.ModuleSpec("tensorrt", None), version
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.parametrize("version, fragment", [("8.6.1", "TensorRT 8.6.1 is older than 10"),
                                               ("10.9.0", "runs its engine on a GPU, not with --gpu_ids -1")])
def test_an_old_tensorrt_or_no_gpu_chosen_is_one_line(version, fragment, trained_workdir, prepared_market, tmp_path,
                                                      monkeypatch, capsys):
    fake_tensorrt(monkeypatch, version)
    monkeypatch.chdir(trained_workdir)
    (tmp_path / "m.engine").write_bytes(b"an engine")
    code, out, err = run_cli(stage4.main, ["--name", "toy", "--backend", "tensorrt", "--test_dir", prepared_market,
                                           "--gpu_ids", "-1", "--onnx", tmp_path / "m.engine",
                                           "--output", tmp_path / "m.mat"], capsys)
    assert code == 2 and out == "" and fragment in one_error_line(err), err
    assert sorted(os.listdir(tmp_path)) == ["m.engine"]


@needs_onnx
def test_the_graph_tensorrt_parses_casts_its_uint8_input_before_anything_else_reads_it(tmp_path):
    import onnx

    import model as models
    from reid import tensorrt_export

    net = models.build_model("resnet18", 10, False).eval()
    graph, rewritten = str(tmp_path / "net.onnx"), str(tmp_path / "cast_first.onnx")
    onnx_export.export(net, (64, 32), graph)
    shutil.copy(graph, rewritten)
    tensorrt_export.cast_first(rewritten)
    readers = {name: [node.op_type for node in onnx.load(name).graph.node if "pictures" in node.input]
               for name in (graph, rewritten)}
    assert readers[rewritten] == ["Cast"] and len(readers[graph]) > 1, readers   # the exporter's Shape read it too
    onnx.checker.check_model(onnx.load(rewritten))
    pictures = np.random.default_rng(0).integers(0, 256, (3, 3, 64, 32), dtype=np.uint8)
    before, after = (onnx_export.session(name).run(None, {"pictures": pictures})[0] for name in (graph, rewritten))
    assert np.array_equal(before, after)


@needs_onnx
@pytest.mark.skipif(not has_tensorrt, reason="TensorRT runs on an NVIDIA GPU with the tensorrt package installed")
def test_tensorrt_engine_passes_the_gate_and_evaluates_as_pytorch_does(trained_workdir, prepared_market, tmp_path,
                                                                       monkeypatch, capsys):
    monkeypatch.chdir(trained_workdir)
    code, out, err = run_cli(export.main, ["--name", "toy", "--format", "tensorrt", "--output", tmp_path / "m.engine"],
                             capsys)
    assert code == 0 and "TensorRT engine for" in out, err
    assert float(out.split("lowest cosine ")[1].split()[0]) >= onnx_export.MIN_COSINE
    scores = scores_by_backend(("torch", "tensorrt"), ["--gpu_ids", "0", "--name", "toy", "--test_dir", prepared_market,
                                                       "--batchsize", "300", "--onnx", tmp_path / "m.engine"], tmp_path,
                               capsys)
    assert np.allclose(scores["torch"], scores["tensorrt"], atol=1e-3), scores
    (tmp_path / "broken.engine").write_bytes(b"not an engine")
    code, _, err = run_cli(stage4.main, ["--gpu_ids", "0", "--name", "toy", "--test_dir", prepared_market,
                                         "--backend", "tensorrt", "--onnx", tmp_path / "broken.engine"], capsys)
    assert code == 2 and "is not a TensorRT engine this machine can run" in one_error_line(err)
