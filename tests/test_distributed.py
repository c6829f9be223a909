"""Training in several processes: each rank's share of a batch, and a real 2-process gloo run under torchrun
that writes one run folder (as a 1-process run does), resumes (with 2 processes, then with 1), and that
test.py reads."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import test as stage4
import train
import utils
from conftest import ROOT, run_cli
from reid import distributed, recipes
from reid.distributed import World
from reid.features import load_features
from test_train import FAST


def test_rank_slices_cover_each_batch_once():
    batches = [list(range(start, start + 8)) for start in range(0, 32, 8)]
    slices = [list(distributed.RankSlice(batches, World(rank, rank, 2))) for rank in range(2)]
    for index, batch in enumerate(batches):
        assert sorted(slices[0][index] + slices[1][index]) == batch
        assert not set(slices[0][index]) & set(slices[1][index])


def test_pk_batches_are_sliced_by_whole_identities():
    labels = [i // 5 for i in range(40)]   # 8 identities, 5 pictures each
    generator = torch.Generator().manual_seed(0)
    sampler = recipes.PKSampler(labels, identities=4, instances=2, generator=generator)
    for rank in range(2):
        for batch in distributed.RankSlice(sampler, World(rank, rank, 2)):
            per_identity = {}
            for index in batch:
                per_identity[labels[index]] = per_identity.get(labels[index], 0) + 1
            assert len(per_identity) == 2 and set(per_identity.values()) == {2}


@pytest.mark.parametrize("batchsize, instances, ok", [(8, None, True), (7, None, False), (16, 4, True),
                                                      (12, 4, False)])
def test_the_global_batch_must_split_evenly(batchsize, instances, ok):
    if ok:
        distributed.check_batch(World(0, 0, 2), batchsize, instances)
    else:
        with pytest.raises(distributed.UserError, match="does not split evenly over 2 processes"):
            distributed.check_batch(World(0, 0, 2), batchsize, instances)


def torchrun(workdir, *argv, processes=2):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(processes), os.path.join(ROOT, "train.py"), *map(str, argv)], cwd=workdir,
                          capture_output=True, text=True, timeout=300, env=environment)


def run_folder(run_dir):
    """What a run folder holds: its file names, opts.yaml, summary.csv's columns and the weights' shapes."""
    with open(run_dir / "opts.yaml") as handle:
        opts = yaml.safe_load(handle)
    with open(run_dir / "summary.csv") as handle:
        columns = handle.readline().strip().split(",")
    shapes = {key: tuple(value.shape) for key, value in torch.load(run_dir / "net_last.pth", weights_only=True).items()}
    return sorted(os.listdir(run_dir)), opts, columns, shapes


def test_two_gloo_processes_write_one_run_that_resumes_and_tests(prepared_market, tmp_path, monkeypatch, capsys):
    common = ["--data_dir", prepared_market, "--name", "ddp", *FAST]
    run = torchrun(tmp_path, *common, "--total_epoch", "1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("epoch 1/1") == 1 and "x 2 processes" in run.stdout   # rank 0 alone reports
    alone = tmp_path / "alone"
    alone.mkdir()
    monkeypatch.chdir(alone)
    code, out, err = run_cli(train.main, [*common, "--total_epoch", "1"], capsys)   # the same command, 1 process
    assert code == 0, err
    two, one = run_folder(tmp_path / "model/ddp"), run_folder(alone / "model/ddp")
    assert two == one and two[0] == ["net_last.pth", "opts.yaml", "state_last.pth", "summary.csv", "train.jpg"]
    run = torchrun(tmp_path, *common, "--resume", "--total_epoch", "2")
    assert run.returncode == 0 and "epochs 2..2" in run.stdout, run.stderr[-2000:]
    assert torch.load(tmp_path / "model/ddp/state_last.pth", weights_only=True)["epoch"] == 2
    # now 1 process, still through a process group (what checks the NCCL path on a machine with one GPU)
    run = torchrun(tmp_path, *common, "--resume", "--total_epoch", "3", processes=1)
    assert run.returncode == 0 and "x 1 process:" in run.stdout and "epochs 3..3" in run.stdout, run.stderr[-2000:]
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "ddp", "--test_dir", prepared_market,
                                           "--num_workers", "0", "--output", tmp_path / "ddp.mat"], capsys)
    assert code == 0 and "Rank@1:" in out, err


def test_a_batch_that_does_not_split_stops_before_any_work(prepared_market, tmp_path):
    run = torchrun(tmp_path, "--data_dir", prepared_market, "--name", "odd", *FAST, "--batchsize", "7",
                   "--total_epoch", "1")
    assert run.returncode != 0 and "error: --batchsize 7 (pictures) does not split evenly over 2 processes" in run.stderr
    assert not (tmp_path / "model").exists()


def spawned(workdir, *argv):
    """What ``--gpu_ids 0,1`` does without torchrun, on the CPU: distributed.spawn starts 2 processes."""
    program = (f"import sys; sys.path.insert(0, {ROOT!r}); import train; from reid import distributed; "
               f"distributed.spawn(train.main, {list(map(str, argv))!r}, 2)")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", program], cwd=workdir, capture_output=True, text=True, timeout=300,
                          env=environment)


def test_spawned_processes_train_like_torchrun_with_the_weight_average(prepared_market, tmp_path, monkeypatch,
                                                                      capsys):
    run = spawned(tmp_path, "--data_dir", prepared_market, "--name", "spawned", *FAST, "--total_epoch", "1", "--wa")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("epoch 1/1") == 1 and "x 2 processes" in run.stdout
    assert sorted(os.listdir(tmp_path / "model/spawned")) == ["net_average.pth", "net_last.pth", "opts.yaml",
                                                              "state_last.pth", "summary.csv", "train.jpg"]
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(stage4.main, ["--gpu_ids", "-1", "--name", "spawned", "--test_dir", prepared_market,
                                           "--which_epoch", "average", "--num_workers", "0",
                                           "--output", tmp_path / "average.mat"], capsys)
    assert code == 0 and "Rank@1:" in out, err


def test_a_user_error_in_a_spawned_process_is_its_one_line(prepared_market, tmp_path):
    run = spawned(tmp_path, "--data_dir", tmp_path / "nowhere", "--name", "lost", *FAST, "--total_epoch", "1")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert {line for line in run.stderr.splitlines() if line.strip()} == {
        f"error: {tmp_path / 'nowhere'}/train does not exist — pass the pytorch/ folder written by prepare.py"}


def test_processes_asked_for_gpus_on_a_machine_without_any_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(distributed.UserError, match="no CUDA GPU — pass --gpu_ids -1"):
        distributed.choose_device(World(0, 0, 2), "0")
    with pytest.raises(distributed.UserError, match="^1 process was started to train on GPUs"):   # torchrun, 1 process
        distributed.choose_device(World(0, 0, 1, launched=True), "0")
    assert distributed.choose_device(World(0, 0, 2), "-1") == (torch.device("cpu"), [])


def test_sync_bn_is_refused_on_the_cpu_and_a_no_op_alone():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    assert distributed.sync_batchnorm(net, World(), torch.device("cpu")) is net
    with pytest.raises(distributed.UserError, match="--sync_bn needs CUDA"):
        distributed.sync_batchnorm(net, World(0, 0, 2), torch.device("cpu"))
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)   # what the CUDA path does
    assert isinstance(converted[1], torch.nn.SyncBatchNorm) and converted[1].weight is net[1].weight


def test_gpu_process_groups_carry_cpu_tensors_too():
    # NCCL alone refuses the CPU tensors reduce_sums adds up (the epoch's loss totals, test.py's broken
    # pictures); the CPU's group is gloo alone (NCCL cannot start without a GPU, so CI checks only the name)
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 1)) == "cpu:gloo,cuda:nccl"


def test_only_a_launcher_makes_a_process_group(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "1")   # set by something else, without torchrun's rendezvous
    assert distributed.from_environment() == World() and not World().distributed
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("RANK", "0")
    assert distributed.from_environment() == World(0, 0, 1, launched=True)   # torchrun --nproc_per_node 1
    assert distributed.from_environment().distributed


def test_the_process_group_waits_as_long_as_dist_timeout_says(monkeypatch, capsys):
    """Rank 0 validates and writes while the others wait: torch's 10 minutes would abort a slow epoch's job."""
    import datetime

    import torch.distributed as dist

    joined, patient, waited = [], [], []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kwargs: joined.append(kwargs["timeout"]))
    monkeypatch.setattr(dist, "new_group", lambda **kwargs: patient.append(kwargs) or "the patient group")
    monkeypatch.setattr(dist, "barrier", lambda group=None: waited.append(group))
    world = World(0, 0, 2, launched=True)
    distributed.start(world, torch.device("cpu"))
    distributed.start(world, torch.device("cpu"), 5)
    assert joined == [datetime.timedelta(minutes=distributed.TIMEOUT_MINUTES), datetime.timedelta(minutes=5)]
    assert distributed.TIMEOUT_MINUTES > 10
    # while rank 0 validates and writes, the others wait in a gloo group of their own that does not give up
    assert patient[-1] == {"backend": "gloo", "timeout": datetime.timedelta(days=distributed.PATIENT_DAYS)}
    distributed.wait_for_main(World(1, 1, 2, launched=True))
    assert waited == ["the patient group"]
    assert train.build_parser().parse_args(["--dist_timeout", "90"]).dist_timeout == 90
    code, _, err = run_cli(train.main, ["--dist_timeout", "0"], capsys)
    assert code == 2 and "--dist_timeout must be a positive number" in err


def test_two_processes_extract_the_same_features_as_one(prepared_market, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    train.main(["--data_dir", str(prepared_market), "--name", "shards", *FAST, "--total_epoch", "1"])
    common = ["--gpu_ids", "-1", "--name", "shards", "--test_dir", str(prepared_market), "--num_workers", "0",
              "--batchsize", "16", "--multi"]
    code, out, err = run_cli(stage4.main, [*common, "--output", tmp_path / "one.mat"], capsys)
    assert code == 0, err
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          os.path.join(ROOT, "test.py"), *common, "--output", str(tmp_path / "two.mat")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, env=environment)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("Rank@1:") == 2 and run.stdout.count("wrote ") == 1   # single and multi-query, once
    one, two = load_features(str(tmp_path / "one.mat")), load_features(str(tmp_path / "two.mat"))
    for key in ("query_label", "query_cam", "gallery_label", "gallery_cam"):
        assert np.array_equal(one[key], two[key]), key
    for key in ("query_f", "gallery_f"):
        assert one[key].shape == two[key].shape and np.abs(one[key] - two[key]).max() < 1e-5, key
    multi = load_features(str(tmp_path / "two_multi_query.mat"), multi=True)
    assert len(multi["mquery_f"]) == len(load_features(str(tmp_path / "one_multi_query.mat"), multi=True)["mquery_f"])


def test_uneven_shards_are_gathered_in_order():
    shares = [distributed.shard(7, World(rank, rank, 3)) for rank in range(3)]
    assert [list(share) for share in shares] == [[0, 1], [2, 3], [4, 5, 6]]
    assert [list(share) for share in (distributed.shard(1, World(0, 0, 2)), distributed.shard(1, World(1, 1, 2)))] \
        == [[], [0]]


PAIR_LOSSES = ("triplet", "center", "instance", "circle", "contrast", "lifted", "verif")


def metric_step(features_in, labels, world):
    """One step of a linear feature layer under the batch losses: (loss, the layer's averaged gradient)."""
    from reid.losses import LossSettings, MetricLosses

    torch.manual_seed(0)   # the same layer and class centres in every process
    layer, metric = torch.nn.Linear(6, 4), MetricLosses(PAIR_LOSSES, LossSettings(), 4, 4)
    mine = distributed.rank_share(len(labels), world)
    loss = metric(layer(features_in[mine]), labels[mine])
    loss.backward()
    gradient = torch.cat([layer.weight.grad.ravel(), layer.bias.grad])
    if world.distributed:   # as DistributedDataParallel averages the network's gradients
        torch.distributed.all_reduce(gradient)
        gradient /= world.size
    return loss.detach(), gradient


def _two_process_metric_step(rank, port, folder):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(1)
    features_in, labels = torch.randn(8, 6), torch.arange(4).repeat_interleave(2)   # P x K = 4 x 2
    torch.save(metric_step(features_in, labels, World(rank, rank, 2, launched=True)), os.path.join(folder, f"{rank}.pt"))
    dist.destroy_process_group()


def test_two_processes_take_the_batch_losses_over_the_whole_batch(tmp_path):
    """Each of 2 gloo processes holds 2 of a batch's 4 identities: the triplet, centre, instance and pair
    losses see all 4 (an all-gather that passes gradients back), so the loss and the averaged gradient
    are one process's on the whole batch."""
    torch.multiprocessing.spawn(_two_process_metric_step, args=(distributed.free_port(), str(tmp_path)), nprocs=2)
    torch.manual_seed(1)
    features_in, labels = torch.randn(8, 6), torch.arange(4).repeat_interleave(2)
    loss, gradient = metric_step(features_in, labels, World())
    for rank in range(2):
        their_loss, their_gradient = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert torch.allclose(their_loss, loss, atol=1e-5) and torch.allclose(their_gradient, gradient, atol=1e-5)


def test_rank_0_decides_for_every_rank_on_resume(monkeypatch):
    """opts.yaml is read by rank 0 alone and its content broadcast: rank 0 rewrites the file once resumed."""
    import torch.distributed as dist

    def broadcast(box, src):
        box[0] = {"total_epoch": 60, "read by": "rank 0"}
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    read = []
    decided = distributed.from_main(World(1, 1, 2, launched=True), lambda: read.append(1) or {"read by": "rank 1"})
    assert decided["read by"] == "rank 0" and not read
    assert distributed.from_main(World(), lambda: "alone") == "alone"


def test_each_rank_draws_its_own_dropout_masks_and_rank_0_a_single_process_ones():
    def mask(seed):
        torch.manual_seed(seed)
        return torch.nn.functional.dropout(torch.ones(64), 0.5)
    seeds = [distributed.process_seed(3, 7, World(rank, rank, 2, launched=True)) for rank in range(2)]
    assert seeds[0] == distributed.process_seed(3, 7, World()) == utils.derived_seed(3, 7)
    assert not torch.equal(mask(seeds[0]), mask(seeds[1]))
    torch.manual_seed(5)   # the base seed a DataLoader hands every rank's worker 0 alike
    utils.seed_worker(0)
    rank0 = torch.initial_seed()
    torch.manual_seed(5)
    utils.seed_worker(0, rank=1)
    assert torch.initial_seed() != rank0 and rank0 == 5
