"""Samples per second of the ``run_stats`` loop against the bare eager training loop, in one process.

For each task (its statistics network) and learner, three variants are timed, interleaved in
``--rounds`` rounds so that a change of machine load hits all of them alike (the best round of
each is kept):

* ``bare``: the bare eager loop of the same network at batch size 1 (forward, cross-entropy,
  backward, ``torch.optim.SGD``), no statistics: the floor;
* ``ours``: the real ``upgd.train.run_stats`` as the CLI runs it on a busy machine (statistics every
  step = the faithful seed line, on a second thread, the noise drawn ahead on a third, exact rank
  certificate): ``--stats_worker thread``;
* ``process``: the same with ``--stats_worker process`` (the statistics and the noise each in a
  forked process fed through shared memory, out of reach of the interpreter lock), what the
  default ``--stats_worker auto`` takes for a run of 20,000 samples or more when two cores are idle;
* ``previous``: the same loop as it was before (statistics inline on one thread, the rank
  recomputed by eigvalsh/``matrix_rank`` at every step).

``ours`` and ``previous`` compute the same values (tests/test_overlap.py compares them bit for
bit). Besides wall time, each variant's CPU time per step is taken for the main thread, for the
statistics process (``process``) and for everything together: on a shared machine whose cores are busy
with other work, wall time cannot show what the second core brings, CPU time barely changes. The
projection for an idle 2-core CPU is max(main thread, statistics process, everything / 2) per step. Prints one JSON row per case and a table with
ratios, hours per 1 M samples (measured wall and projected) and the process's peak memory, plus the
machine's load average.

    uv run python benchmarks/bench_throughput.py [--steps 2000] [--tasks cifar10 mnist ...] [--learners baseline sgd]
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import tempfile
import time

import torch
import torch.nn.functional as F
import upgd.train
from forgetting_common.cli import OneLineErrorParser, add_print_config_flag, config_dict
from forgetting_common.errors import run_main
from upgd.cli import Config
from upgd.experiment import Experiment
from upgd.seed_commands import SEED_HPS
from upgd.stats import weight_and_grad_stats
from upgd.train import run_stats

#: task key -> (run_stats task, its statistics network)
TASKS = {
    "cifar10": ("label_permuted_cifar10_stats", "convolutional_network_relu_with_hooks"),
    "mnist": ("input_permuted_mnist_stats", "fully_connected_relu_with_hooks"),
    "mnist_conv": ("input_permuted_mnist_stats", "conv_mnist"),
    "emnist": ("label_permuted_emnist_stats", "fully_connected_relu_with_hooks"),
    "mini_imagenet": ("label_permuted_mini_imagenet_stats", "fully_connected_relu_with_hooks"),
}
SEED_HP = {k[2:]: float(v) for k, v in zip(SEED_HPS[::2], SEED_HPS[1::2]) if k != "--seed"}
HPS = {"sgd": {"lr": 0.01, "weight_decay": 0.0}}


def hps_for(learner: str) -> dict:
    return dict(HPS.get(learner, SEED_HP))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Cost:
    """Per-step wall time, CPU time of the main thread, of the statistics process (the children
    this process has waited for) and of everything together (seconds)."""

    def __init__(self, wall: float, main: float, child: float, process: float) -> None:
        self.wall, self.main, self.child, self.process = wall, main, child, process

    @staticmethod
    def clock() -> tuple[float, float, float, float]:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        child = kids.ru_utime + kids.ru_stime
        return time.perf_counter(), time.thread_time(), child, time.process_time() + child

    @classmethod
    def between(cls, a, b, steps: int) -> Cost:
        return cls(*((y - x) / steps for x, y in zip(a, b)))

    @property
    def idle_two_cores(self) -> float:
        """Projected wall time per step on an idle 2-core CPU: the main thread's work, the
        statistics process's, or half of everything when the helpers need more than the second core."""
        return max(self.main, self.child, self.process / 2)

    def best(self, other: Cost | None) -> Cost:
        if other is None:
            return self
        return Cost(*(min(a, b) for a, b in zip((self.wall, self.main, self.child, self.process),
                                                 (other.wall, other.main, other.child, other.process))))


def bare_loop(task: str, network: str, steps: int, seed: int) -> Cost:
    """Forward/backward/SGD on the task's samples, nothing else."""
    cfg = Config(task=task, learner="sgd", network=network, seed=seed, n_samples=steps,
                 hps=dict(HPS["sgd"]), fake_data=True, quiet=True, tensorboard=False, overlap=False)
    exp = Experiment(cfg)
    net, stream, shape = exp.net, exp.task, exp.input_shape
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    start = Cost.clock()
    for _ in range(steps):
        x, y, _ = stream.next()
        opt.zero_grad()
        F.cross_entropy(net(x.reshape(shape)), y).backward()
        opt.step()
    return Cost.between(start, Cost.clock(), steps)


def _run_stats_once(task: str, network: str, learner: str, steps: int, seed: int, overlap: bool, previous: bool,
                    worker: str = "thread"):
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(task=task, learner=learner, network=network, seed=seed, n_samples=steps,
                     save_path=tmp, hps=hps_for(learner), fake_data=True, quiet=True, tensorboard=False,
                     overlap=overlap, stats_worker=worker, checkpoint_every=0)  # worker: never auto here
        patched = upgd.train.weight_and_grad_stats
        if previous:  # no rank cache: eigvalsh of the Gram matrix / matrix_rank at every step, as before
            upgd.train.weight_and_grad_stats = lambda net, cache=None: weight_and_grad_stats(net, None)
        try:
            start = Cost.clock()
            run_stats(cfg)
            return Cost.clock(), start
        finally:
            upgd.train.weight_and_grad_stats = patched


def stats_run(task: str, network: str, learner: str, steps: int, seed: int, overlap: bool, previous: bool,
              worker: str = "thread") -> Cost:
    """``run_stats`` with statistics every step, per step: a run of ``steps`` + 200 samples minus a
    run of 200, so that the set-up (data, network, files) cancels."""
    short_end, short_start = _run_stats_once(task, network, learner, 200, seed, overlap, previous, worker)
    long_end, long_start = _run_stats_once(task, network, learner, steps + 200, seed, overlap, previous, worker)
    diff = [(le - ls) - (se - ss) for le, ls, se, ss in zip(long_end, long_start, short_end, short_start)]
    return Cost(*(d / steps for d in diff))


def main(argv=None) -> None:
    parser = OneLineErrorParser(prog="bench_throughput.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="samples per timed run (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repeats; the best is kept (default 2)")
    parser.add_argument("--tasks", nargs="+", default=["cifar10", "mnist"], choices=list(TASKS))
    parser.add_argument("--learners", nargs="+", default=["baseline", "sgd"])
    parser.add_argument("--no_previous", action="store_true", help="skip the (slow) previous loop")
    parser.add_argument("--no_process", action="store_true", help="skip the statistics-process variant")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    add_print_config_flag(parser)
    args = parser.parse_args(argv)
    if args.print_config:
        print(json.dumps(config_dict(args), sort_keys=True))
        return
    torch.set_num_threads(1)  # as upgd/cli.py: one intra-op thread; ours adds its helper threads
    load_before = os.getloadavg()
    rows = []
    for key in args.tasks:
        task, network = TASKS[key]
        for learner in args.learners:
            best: dict[str, Cost] = {}
            case = (task, network, learner, args.steps, 19)
            variants = {"bare": functools.partial(bare_loop, task, network, args.steps, 19),
                        "ours": functools.partial(stats_run, *case, True, False)}
            if not args.no_process:
                variants["process"] = functools.partial(stats_run, *case, True, False, "process")
            if not args.no_previous:
                variants["previous"] = functools.partial(stats_run, *case, False, True)
            bare_loop(task, network, 50, 19)  # warm-up (allocator, kernels)
            for _ in range(args.rounds):
                for name, fn in variants.items():
                    best[name] = fn().best(best.get(name))
            bare = best["bare"]
            row = {"task": task, "network": network, "learner": learner}
            for name, cost in best.items():
                row[f"{name}_samples_per_s"] = round(1 / cost.wall, 1)
            for name, cost in best.items():
                row[f"{name}_ms_cpu_main"] = round(cost.main * 1e3, 3)
                if name == "process":
                    row[f"{name}_ms_cpu_stats_process"] = round(cost.child * 1e3, 3)
                row[f"{name}_ms_cpu_all"] = round(cost.process * 1e3, 3)
            for name, cost in best.items():
                if name != "bare":
                    row[f"{name}_over_bare_wall"] = round(cost.wall / bare.wall, 2)
                    row[f"{name}_over_bare_idle2"] = round(cost.idle_two_cores / bare.idle_two_cores, 2)
                    row[f"{name}_hours_1M_wall"] = round(cost.wall * 1e6 / 3600, 3)
                    row[f"{name}_hours_1M_idle2"] = round(cost.idle_two_cores * 1e6 / 3600, 3)
            row["bare_hours_1M_wall"] = round(bare.wall * 1e6 / 3600, 3)
            row["bare_hours_1M_idle2"] = round(bare.idle_two_cores * 1e6 / 3600, 3)
            row["load_average_1min"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "intra_op_threads": 1, "steps": args.steps, "rounds": args.rounds,
               "load_average_before": [round(v, 2) for v in load_before],
               "load_average_after": [round(v, 2) for v in os.getloadavg()],
               "peak_rss_MiB": round(peak_rss_mib())}
    print(json.dumps(machine))
    header = ["task", "network", "learner", "bare_samples_per_s", "ours_samples_per_s", "process_samples_per_s",
              "previous_samples_per_s", "ours_over_bare_wall", "process_over_bare_wall", "ours_over_bare_idle2",
              "process_over_bare_idle2", "previous_over_bare_idle2", "ours_hours_1M_wall",
              "ours_hours_1M_idle2", "previous_hours_1M_idle2", "bare_hours_1M_idle2", "load_average_1min"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row.get(h, "")) for h in header) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"rows": rows, "machine": machine}, handle, indent=2)


if __name__ == "__main__":
    run_main(main, prog="bench_throughput.py")
