"""Training in several processes (``torchrun --nproc_per_node N train.py …``): who this process is, the
process group, and each rank's share of every batch.

The design keeps a distributed run the same experiment as a one-process run:
  * ``--batchsize`` is the *global* batch: every rank draws the same batches from the same generator
    (seeded from (--seed, epoch), so --resume repeats an epoch exactly) and keeps its own slice, so
    DistributedDataParallel's averaged gradient is the gradient of the whole batch and the learning
    rate needs no rescaling;
  * the batch losses (triplet, centre, instance, pairs) gather the whole batch's features
    (losses.whole_batch), so they compare every picture with every other, as one process does;
  * each rank draws its own dropout masks and augmentations (process_seed), rank 0 a one-process run's;
  * rank 0 alone writes the run folder, prints and draws the progress bars, and decides on --resume.
The one difference from a single process: BatchNorm statistics are per rank unless --sync_bn.

``--gpu_ids 0,1`` without torchrun starts the same path: ``spawn`` runs one process per listed GPU on
this machine, as ``torchrun --standalone --nproc_per_node 2`` would (DataParallel is gone).
"""
import os
from dataclasses import dataclass

from utils import UserError, derived_seed


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    launched: bool = False   # started by torchrun (or spawn): a process group even for one process

    @property
    def main(self):
        return self.rank == 0

    @property
    def distributed(self):
        """Whether this run trains through a process group and DistributedDataParallel. ``torchrun
        --nproc_per_node 1`` does too, so that a machine with one GPU runs (and checks) the NCCL path."""
        return self.size > 1 or self.launched


def from_environment():
    """The World that torchrun describes in RANK, LOCAL_RANK, WORLD_SIZE and MASTER_ADDR; one process alone
    without them."""
    if "WORLD_SIZE" not in os.environ or "MASTER_ADDR" not in os.environ:
        return World()
    return World(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]),
                 launched=True)


def backend_for(device):
    """The process group's backends: gloo on the CPU (so CI can run two processes); on GPUs NCCL for CUDA
    tensors *and* gloo for CPU ones, since NCCL alone refuses a CPU tensor ("No backend type associated with
    device type cpu") and the epoch's loss totals and test.py's broken-picture count are summed on the CPU."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


TIMEOUT_MINUTES = 60   # torch's 10: a slow held-out evaluation or file system on rank 0 would abort the job
PATIENT_DAYS = 7       # wait_for_main: rank 0's validation and writes take what they take
_GROUPS = {}           # the process group of wait_for_main, made by start


def start(world, device, timeout_minutes=TIMEOUT_MINUTES):
    """Join the process group (on a GPU bound to ``device``, so that NCCL's barrier knows its GPU). Every
    collective waits up to ``timeout_minutes`` for the other processes, except wait_for_main."""
    import datetime

    import torch.distributed as dist

    if world.distributed and not dist.is_initialized():
        bound = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend_for(device), timeout=datetime.timedelta(minutes=timeout_minutes), **bound)
        _GROUPS["patient"] = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=PATIENT_DAYS))


def wait_for_main(world):
    """The other ranks wait here while rank 0 validates, scores the held-out set and writes the epoch's
    files; rank 0 joins when it is done. A barrier of a gloo group of its own whose timeout is PATIENT_DAYS:
    no --dist_timeout fits every held-out set and file system, and if rank 0 dies the launcher (torchrun,
    spawn) stops the others anyway."""
    import torch.distributed as dist

    if world.distributed:
        dist.barrier(group=_GROUPS.get("patient"))


def from_main(world, make):
    """``make()`` run by rank 0 alone, its result (any picklable value) given to every rank: one decision,
    where each rank reading a file that rank 0 is about to rewrite could decide otherwise."""
    if not world.distributed:
        return make()
    import torch.distributed as dist

    box = [make() if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def process_seed(seed, epoch, world):
    """The seed of this process's own draws in ``epoch`` (dropout, per-picture augmentation): rank 0's is a
    one-process run's, so torchrun with one process repeats ``python train.py``; each other rank's is its
    own, so no two ranks drop the same units. The batches' order comes from a generator all ranks share."""
    return derived_seed(seed, epoch) if world.rank == 0 else derived_seed(seed, epoch, world.rank)


def stop(world):
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world):
    import torch.distributed as dist

    if world.distributed:
        dist.barrier()


def check_batch(world, batchsize, instances=None):
    """The global batch must split evenly: into equal slices, or (P x K) into whole identities."""
    unit = instances or 1
    if world.distributed and (batchsize // unit) % world.size:
        what = f"{batchsize // unit} identities of --num_instances {instances}" if instances else "pictures"
        raise UserError(f"--batchsize {batchsize} ({what}) does not split evenly over {world.size} processes",
                        f"pass a --batchsize that is a multiple of {world.size * unit}")


class RankSlice:
    """A batch sampler's batches, cut to this rank's contiguous slice (whole identities for P x K)."""

    def __init__(self, batches, world):
        self.batches, self.world = batches, world

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield batch[rank_share(len(batch), self.world)]


def rank_share(batchsize, world):
    """This rank's contiguous part of a batch of ``batchsize``, as a slice."""
    share = batchsize // world.size
    return slice(world.rank * share, (world.rank + 1) * share)


def shard(count, world):
    """This rank's contiguous share of ``count`` items (test.py's pictures), as a range; shares differ by <= 1."""
    start = world.rank * count // world.size
    return range(start, (world.rank + 1) * count // world.size)


def gather_rows(world, rows, device):
    """Every rank's (n_i, D) float tensor (None for an empty share), stacked in rank order, on every rank:
    padded to the longest share for all_gather (gloo on the CPU, NCCL from ``device``), then trimmed."""
    import torch

    if not world.distributed:
        return rows if rows is not None else torch.empty(0, 0)
    import torch.distributed as dist

    shape = torch.tensor(list(rows.shape) if rows is not None else [0, 0], device=device)
    shapes = [torch.zeros_like(shape) for _ in range(world.size)]
    dist.all_gather(shapes, shape)
    longest, width = (max(int(s[i]) for s in shapes) for i in (0, 1))
    padded = torch.zeros(longest, width, device=device)
    if rows is not None:
        padded[:len(rows)] = rows.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:int(s[0])] for part, s in zip(gathered, shapes)]).cpu()


def reduce_sums(world, *values):
    """The sum over ranks of each value (loss totals, correct counts), as floats."""
    if not world.distributed:
        return values
    import torch
    import torch.distributed as dist

    totals = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(totals)
    return tuple(totals.tolist())


def average_gradients(world, module):
    """Average the gradients of parameters that DistributedDataParallel does not hold (the metric losses'
    class centres), so that every rank takes the same step."""
    if not world.distributed or module is None:
        return
    import torch.distributed as dist

    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= world.size


def wrap(net, world, device):
    """DistributedDataParallel around ``net`` when there are several processes; ``net`` itself otherwise."""
    if not world.distributed:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def device_of(world, device, gpu_ids=()):
    """Each process drives one GPU: the LOCAL_RANK-th of ``--gpu_ids`` when it lists several (spawned
    processes, or torchrun with --gpu_ids 2,3), else GPU LOCAL_RANK. The CPU stays the CPU."""
    if not world.distributed or device.type != "cuda":
        return device
    import torch

    choices = list(gpu_ids) if len(gpu_ids) > 1 else list(range(torch.cuda.device_count()))
    if world.local_rank >= len(choices):
        raise UserError(f"process {world.local_rank} of this machine has no GPU of its own "
                        f"({len(choices)} {'listed in --gpu_ids' if len(gpu_ids) > 1 else 'found'})",
                        "pass torchrun --nproc_per_node at most the number of GPUs, or --gpu_ids -1 for the CPU")
    torch.cuda.set_device(choices[world.local_rank])
    return torch.device("cuda", choices[world.local_rank])


def choose_device(world, gpu_ids_text):
    """This process's device and the GPU ids ``--gpu_ids`` lists. Several processes asked to use GPUs on a
    machine without CUDA are refused (one process falls back to the CPU with a warning instead)."""
    import torch

    from utils import parse_gpu_ids, select_device

    if world.distributed and parse_gpu_ids(gpu_ids_text) and not torch.cuda.is_available():
        started = f"{world.size} processes were" if world.size > 1 else "1 process was"
        raise UserError(f"{started} started to train on GPUs (--gpu_ids {gpu_ids_text}), "
                        "but this machine has no CUDA GPU", "pass --gpu_ids -1 to train them on the CPU (gloo)")
    device, gpu_ids = select_device(gpu_ids_text)
    return device_of(world, device, gpu_ids), gpu_ids


def sync_batchnorm(net, world, device):
    """``--sync_bn``: BatchNorm statistics over the whole global batch (NCCL only: PyTorch's SyncBatchNorm
    has no CPU kernel, so on the CPU it is refused before any work; alone it changes nothing)."""
    if not world.distributed:
        return net
    if device.type != "cuda":
        raise UserError("--sync_bn needs CUDA (PyTorch's SyncBatchNorm has no CPU implementation)",
                        "drop --sync_bn on the CPU; per-process BatchNorm is what runs there")
    from torch import nn

    return nn.SyncBatchNorm.convert_sync_batchnorm(net)


def free_port():
    """A TCP port nobody listens on now, for the processes of one machine to meet."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(entry, argv, processes):
    """Run ``entry(argv)`` in ``processes`` new processes that find each other as torchrun's would
    (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT); returns once all have finished. A process that
    stopped on a user error has printed its line (each process that met it prints the same one): its exit
    status is passed on without a traceback."""
    import logging

    import torch.multiprocessing as mp

    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)   # its "terminating process" notes
    try:
        mp.spawn(_spawned, args=(entry, argv, processes, free_port()), nprocs=processes, join=True)
    except mp.ProcessExitedException as err:
        raise SystemExit(err.exit_code if err.exit_code and err.exit_code > 0 else 1) from None


def _spawned(rank, entry, argv, processes, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(processes), LOCAL_WORLD_SIZE=str(processes),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    entry(argv)
