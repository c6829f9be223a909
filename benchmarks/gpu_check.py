"""The CUDA path proved in under 8 minutes on one GPU: correctness first, speed last, numbers checked.

Each step runs the stage scripts as a student would (subprocesses, each with its own timeout) and checks
what they wrote, not only that they exited 0. The timeouts add up to at most BUDGET_SECONDS, so the
whole check fits in a borrowed GPU's minutes by construction. Several GPUs: the torchrun step uses one
process (its comparison is with one plain process); everything else runs on GPU 0.

Without a GPU it checks what a CPU can: that the plan fits the budget and that every command of it
parses with today's flags; it says so in one line and exits 0.
"""
import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # the stages' modules, for the checks that read their files and parse their flags
BUDGET_SECONDS = 480
TARGETS = {"train img/s": 3000, "extract img/s": 10000}   # resnet50 at 256x128 on one H100
MARKET_TRAIN_PICTURES = 12936
BASE = ["--backbone", "resnet50", "--no_pretrained", "--batchsize", "64", "--num_workers", "8", "--seed", "0"]


@dataclass
class Step:
    name: str
    timeout: int
    commands: list                                # argv lists, run in order; a script name is a stage at the root
    check: object = None                          # (work folder) -> (ok, figures text); None: exit codes only
    figures: str = ""
    status: str = "not run"
    seconds: float = 0.0
    output: list = field(default_factory=list)


def stage(script, *argv):
    return [script, *map(str, argv)]


def torchrun(script, *argv):
    return ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", os.path.join(ROOT, script),
            *map(str, argv)]


def summary(work, name):
    with open(os.path.join(work, "model", name, "summary.csv")) as handle:
        return list(csv.DictReader(handle))


def mat(work, name):
    from reid.features import load_features

    return load_features(os.path.join(work, name))


def loss_falls_and_scaler_kept(work):
    import torch

    rows = summary(work, "fp16_bot")
    losses = [float(row["train_loss"]) for row in rows]
    state = torch.load(os.path.join(work, "model", "fp16_bot", "state_last.pth"), weights_only=True)
    kept = bool(state["scaler"]) and "scale" in state["scaler"]
    average = os.path.isfile(os.path.join(work, "model", "fp16_bot", "net_average.pth"))
    unseen = "unseen_mAP" in rows[-1]
    ok = len(losses) == 2 and losses[1] < losses[0] and kept and average and unseen
    return ok, (f"loss {losses[0]:.3f} -> {losses[-1]:.3f} across the resume; scaler state {'kept' if kept else 'LOST'};"
                f" net_average.pth {'written' if average else 'MISSING'}; held-out scored: {unseen}")


def torchrun_matches_plain(work):
    plain, launched = summary(work, "plain")[-1], summary(work, "launched")[-1]
    loss = abs(float(plain["train_loss"]) / float(launched["train_loss"]) - 1)
    accuracy = abs(float(plain["val_acc"]) - float(launched["val_acc"]))
    return loss < 0.02 and accuracy < 0.05, f"train loss differs by {100 * loss:.2f} %, val acc by {accuracy:.3f}"


def bf16_features_agree(work):
    full, half = mat(work, "fp32.mat"), mat(work, "bf16.mat")
    cosines = [(full[key] * half[key]).sum(1) for key in ("query_f", "gallery_f")]
    lowest = min(float(c.min()) for c in cosines)
    return lowest > 0.98, f"lowest cosine between bf16 and fp32 features {lowest:.4f} (mean {cosines[1].mean():.4f})"


def evaluation_agrees(work):
    printed = []
    for name in ("eval_gpu.txt", "eval_cpu.txt"):
        with open(os.path.join(work, name)) as handle:
            lines = [line for line in handle if line.strip().startswith(("Rank@", "FPR", "EER", "95%"))]
        printed.append([float(x) for line in lines for x in re.findall(r"\d+\.\d+", line)])
    same = len(printed[0]) == len(printed[1]) > 4 and max(abs(a - b) for a, b in zip(*printed)) <= 2e-6
    return same, f"{len(printed[0])} printed figures, largest difference {max(abs(a - b) for a, b in zip(*printed)):.1e}"


def read_figures(name):
    """A check that reports the ``key=value`` lines a snippet wrote to ``name``, beside their targets."""
    def check(work):
        with open(os.path.join(work, name)) as handle:
            figures = dict(line.strip().split("=", 1) for line in handle if "=" in line)
        return True, "; ".join(f"{key} {value}" + (f" (target {TARGETS[key]:,})" if key in TARGETS else "")
                               for key, value in figures.items())
    return check


MSMT17_EVALUATION = """
import time, torch
from eval_speed import problem, MSMT17
from reid import metrics
data = problem(*MSMT17)
metrics.evaluate(*[d[:50] for d in data[:3]], *data[3:], device='cuda')   # warm-up
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); started = time.perf_counter()
result = metrics.evaluate(*data, device='cuda', pairs=True); torch.cuda.synchronize()
with open('msmt17.txt', 'w') as out:
    out.write(f'seconds={{time.perf_counter() - started:.2f}}\\npeak GPU GB={{torch.cuda.max_memory_allocated() / 2**30:.2f}}\\n'
              f'mAP={{result.mAP:.6f}}\\n')
"""

EXTRACTION_SPEED = """
import time, torch
import model
from reid import acceleration, extraction
device = torch.device('cuda')
net, _ = model.load_trained('model/speed', 'last', device)
net = acceleration.on_cuda(net, device)
pictures, _, _ = extraction.split_pictures({data!r}, 'gallery', (256, 128))
pictures.samples = pictures.samples * max(1, 20000 // len(pictures.samples))   # enough to time
run = lambda: extraction.extract_features(net, pictures, device, 512, num_workers=12, amp_dtype=torch.bfloat16)
extraction.extract_features(net, torch.utils.data.Subset(pictures, range(2048)), device, 512, num_workers=12,
                            amp_dtype=torch.bfloat16)
started = time.perf_counter(); run(); seconds = time.perf_counter() - started
with open('extract.txt', 'w') as out:
    out.write(f'extract img/s={{len(pictures) / seconds:.0f}}\\n')
"""


def train_speed(work):
    speed = count_pictures(work) / float(summary(work, "speed")[-1]["train_seconds"])   # the last epoch's
    minutes = 60 * MARKET_TRAIN_PICTURES / speed / 60   # 60 epochs, in minutes
    return speed > 0, (f"train img/s {speed:,.0f} (target {TARGETS['train img/s']:,}); 60 Market-1501 epochs "
                       f"~{minutes:.1f} min (target 5)")


def count_pictures(work):
    return sum(len(files) for _, _, files in os.walk(os.path.join(work, "Market", "pytorch", "train")))


def speed_and_syncs(work):
    """train.py's own images/s (its last epoch) and what set_sync_debug_mode and TORCH_LOGS=recompiles saw
    during the training phases: fewer synchronisations than steps, or a sync hides in every step."""
    ok, figures = train_speed(work)
    with open(os.path.join(work, "speed.log")) as handle:
        text = handle.read()
    syncs = text.count("called a synchronizing CUDA operation")
    recompiles = len(re.findall(r"[Rr]ecompiling", text))
    steps = 3 * (count_pictures(work) // 128)
    return ok and syncs < steps, f"{figures}; {syncs} synchronisations in {steps} training steps; {recompiles} recompiles"


WATCHED_TRAIN = """
import sys, warnings, torch
import train
warnings.simplefilter('always')   # every synchronisation, not the first of each line
real = train.run_epoch
def watched(net, loader, phase, ctx):
    torch.cuda.set_sync_debug_mode('warn' if phase == 'train' else 0)
    try:
        return real(net, loader, phase, ctx)
    finally:
        torch.cuda.set_sync_debug_mode(0)
train.run_epoch = watched
train.main(sys.argv[1:])
"""


def plan(data):
    """The steps in order: correctness, then speed."""
    gpu = ["--gpu_ids", "0"]
    data_flags = ["--data_dir", data]
    return [
        Step("machine", 10, [["-c", "import torch; print(torch.__version__, torch.version.cuda, "
                                    "torch.cuda.get_device_name(0), torch.cuda.device_count(), 'GPU(s)')"]]),
        Step("toy Market (real JPEGs) with held-out identities", 40,
             [stage("toy_data.py", "--out", os.path.dirname(os.path.dirname(data)), "--train_ids", 300,
                    "--workers", 12),
              stage("prepare.py", "--download_path", os.path.dirname(data), "--val_ids", 20)]),
        Step("--recipe bot --wa --fp16, one epoch, then --resume to two", 65,
             [stage("train.py", *gpu, *BASE, *data_flags, "--name", "fp16_bot", "--recipe", "bot", "--wa", "--fp16",
                    "--total_epoch", 1),
              stage("train.py", *gpu, "--name", "fp16_bot", "--resume", "--total_epoch", 2)],
             loss_falls_and_scaler_kept),
        Step("torchrun with one process = plain python train.py (same seed)", 70,
             [stage("train.py", *gpu, *BASE, *data_flags, "--name", "plain", "--total_epoch", 1),
              torchrun("train.py", *gpu, *BASE, *data_flags, "--name", "launched", "--total_epoch", 1)],
             torchrun_matches_plain),
        Step("test.py fp32 against bf16 features; --ms 1,1.1", 70,
             [stage("test.py", *gpu, "--name", "plain", "--test_dir", data, "--output", "fp32.mat"),
              stage("test.py", *gpu, "--name", "plain", "--test_dir", data, "--output", "bf16.mat", "--bf16"),
              stage("test.py", *gpu, "--name", "plain", "--test_dir", data, "--output", "ms.mat", "--ms", "1,1.1")],
             bf16_features_agree),
        Step("evaluate_gpu.py on the GPU = on the CPU", 25,
             [stage("evaluate_gpu.py", "--mat", "fp32.mat", "--gpu_ids", "0", ">eval_gpu.txt"),
              stage("evaluate_gpu.py", "--mat", "fp32.mat", "--gpu_ids", "-1", ">eval_cpu.txt")],
             evaluation_agrees),
        Step("MSMT17-size evaluation on the GPU (11,659 x 82,161)", 30,
             [["-c", MSMT17_EVALUATION.format()]], read_figures("msmt17.txt")),
        Step("speed: train.py --bf16 --input_pipeline device --compile; syncs and recompiles", 140,
             [["-c", WATCHED_TRAIN, *gpu, *BASE, *data_flags, "--name", "speed", "--batchsize", 128,
               "--bf16", "--input_pipeline", "device", "--compile", "--total_epoch", 3, ">speed.log"]],
             speed_and_syncs),
        Step("speed: test.py's extraction on 128x64 JPEGs (bf16)", 30,
             [["-c", EXTRACTION_SPEED.format(data=data)]], read_figures("extract.txt")),
    ]


def run_step(step, work, deadline, log):
    """Run a step's commands within its timeout (and the budget left); then its check."""
    started = time.perf_counter()
    if time.perf_counter() + step.timeout > deadline:
        step.status = "not run: over the budget"
        return
    for argv in step.commands:
        target = argv[-1][1:] if argv[-1].startswith(">") else None
        argv = argv[:-1] if target else argv
        command = [sys.executable] + ([os.path.join(ROOT, argv[0])] + argv[1:] if argv[0].endswith(".py") else argv)
        left = step.timeout - (time.perf_counter() - started)
        try:
            done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=max(1, left),
                                  env={**os.environ, "TORCH_LOGS": "recompiles", "PYTHONUNBUFFERED": "1",
                                       "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "benchmarks")])})
        except subprocess.TimeoutExpired:
            step.status, step.seconds = f"timed out after {step.timeout} s", time.perf_counter() - started
            return
        text = done.stdout + done.stderr
        log.write(f"\n== {step.name}: {' '.join(map(str, command))}\n{text}")
        if target:
            with open(os.path.join(work, target), "w") as handle:
                handle.write(text)
        if done.returncode:
            step.status = f"FAILED (exit {done.returncode}): {text.strip().splitlines()[-1] if text.strip() else ''}"
            step.seconds = time.perf_counter() - started
            return
    step.seconds = time.perf_counter() - started
    try:
        ok, step.figures = step.check(work) if step.check else (True, "")
    except (OSError, KeyError, ValueError, IndexError, ZeroDivisionError) as err:   # a file the step did not write
        ok, step.figures = False, f"its check could not read its output ({err.__class__.__name__}: {err})"
    step.status = "ok" if ok else "FAILED its check"


def check_commands(steps):
    """Every stage command of the plan parses with today's flags (a renamed flag fails here, not on the GPU)."""
    import importlib

    for step in steps:
        for argv in step.commands:
            scripts = [a for a in argv if str(a).endswith(".py")]
            if argv[0] == "-c" and "train.main" in argv[1]:   # train.py run inside a snippet
                scripts, argv = ["train.py"], ["train.py", *argv[2:]]
            if scripts:
                argv = [str(a) for a in argv[argv.index(scripts[0]) + 1:] if not str(a).startswith(">")]
                importlib.import_module(os.path.basename(scripts[0])[:-3]).build_parser().parse_args(argv)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for the log (default: the work folder)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="gpu_check-")
    data = os.path.join(work, "Market", "pytorch")
    steps = plan(data)
    total = sum(step.timeout for step in steps)
    assert total <= BUDGET_SECONDS, f"the steps' timeouts add up to {total} s, more than {BUDGET_SECONDS}"
    import torch

    if not torch.cuda.is_available():
        check_commands(steps)
        print(f"no CUDA GPU here: the {len(steps)} GPU steps were not run (their commands parse; their timeouts add "
              f"up to {total} s of {BUDGET_SECONDS})")
        return 0
    deadline = time.perf_counter() + BUDGET_SECONDS
    log_path = os.path.join(args.out or work, "gpu_check.log")
    with open(log_path, "w") as log:
        for step in steps:
            run_step(step, work, deadline, log)
            print(f"{step.name}: {step.status} in {step.seconds:.0f} s{'; ' + step.figures if step.figures else ''}",
                  flush=True)
    print(f"\n{'step':<62}{'result':<22}{'seconds':>8}")
    for step in steps:
        print(f"{step.name[:60]:<62}{step.status[:20]:<22}{step.seconds:>8.0f}")
    print(f"log: {log_path}")
    return 0 if all(step.status == "ok" for step in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
