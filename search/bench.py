"""`bench`: this engine vs the conventional torchvision pipeline, same model, same steps, same machine.

Conventional = what most MNIST notebooks write: per-sample PIL RandomRotation + ToTensor +
Normalize in a DataLoader with 2 worker processes, and nn.Dropout. Engine = search.train.train
(in-memory uint8 tensors, batch-vectorised rotation, pooled dropout masks).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time

import torch
import torch.nn.functional as F

from search.data import load_mnist, make_split
from search.train import TrainConfig, train
from space.baselines import BASELINES
from space.model import build_model, MNIST_MEAN, MNIST_STD
from space.recipe import PRECISIONS

BATCH = TrainConfig().batch_size  # the model6 recipe's batch, for both pipelines


CONVENTIONAL_SETTINGS = [(threads, workers) for threads in (1, 2) for workers in (0, 1, 2)]


def conventional(root, steps: int, threads: int | None = None, workers: int = 2) -> float:
    """Images per second of the conventional pipeline with `threads` torch threads (default:
    torch's own count) and `workers` DataLoader worker processes."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms
    cfg = TrainConfig()
    tf = transforms.Compose([transforms.RandomRotation(cfg.rotation, fill=0), transforms.ToTensor(),
                             transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    ds = datasets.MNIST(str(root), train=True, download=False, transform=tf)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(BASELINES["model6"].spec, dropout=cfg.dropout, pooled_dropout=False)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers,
                        persistent_workers=False)
    model.train()
    t0, done = time.perf_counter(), 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
        if done == steps:
            break
    return done * BATCH / (time.perf_counter() - t0)


def best_conventional(root, steps: int) -> tuple[float, dict, dict]:
    """The conventional pipeline at its own best: every (threads, DataLoader workers) setting of
    CONVENTIONAL_SETTINGS tried; (best img/s, its setting, all results)."""
    tried = {f"{t} threads, {w} workers": conventional(root, steps, t, w) for t, w in CONVENTIONAL_SETTINGS}
    best = max(tried, key=tried.get)
    t, w = (int(x.split()[0]) for x in best.split(", "))
    return tried[best], {"threads": t, "workers": w}, tried


def run_compare(root, steps: int = 300, repeats: int = 3, as_json: bool = False) -> dict:
    """Engine vs the conventional pipeline at its best setting, repeated: how studies run (one
    single-threaded process per core) against the best conventional setting on the whole machine,
    the ratio per repeat and its spread; and one 15-epoch trial of the default space on one core.
    The engine runs in each precision a recipe can ask for (space.recipe.PRECISIONS); the
    conventional pipeline stays fp32, as notebooks train. Every engine figure is a dict keyed by
    precision; fp32 is how every committed study ran, so it is the one the 3x target is judged on."""
    data = load_mnist(root, download=False)
    root = data.root
    n = mp.cpu_count()
    threads = torch.get_num_threads()
    rows = []
    for rep in range(1, repeats + 1):
        conv, setting, tried = best_conventional(root, steps)
        engine_img_s = {}
        for precision in PRECISIONS:
            with mp.get_context("spawn").Pool(n) as pool:
                job = {"root": root, "steps": steps, "threads": 1, "precision": precision}
                engine_img_s[precision] = sum(img_s for img_s, _ in pool.map(_engine_worker, [job] * n))
        rows.append({"repeat": rep, "conventional_best_img_s": conv, "conventional_best": setting,
                     "conventional_tried": tried, "engine_processes_img_s": engine_img_s,
                     "ratio": {p: v / conv for p, v in engine_img_s.items()}})
        if not as_json:
            print(f"repeat {rep}: conventional best {conv:6.0f} img/s ({setting['threads']} threads, "
                  f"{setting['workers']} DataLoader workers; tried: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in tried.items())
                  + f"); engine {n} x 1 thread: "
                  + "; ".join(f"{p} {v:6.0f} img/s, ratio x{v / conv:.2f}" for p, v in engine_img_s.items()),
                  flush=True)
    torch.set_num_threads(threads)
    ratio = {}
    for p in PRECISIONS:
        r = [row["ratio"][p] for row in rows]
        ratio[p] = {"min": min(r), "max": max(r), "spread": max(r) / min(r) - 1}
    trial = {p: family_cost(data, "model6", steps, precision=p) for p in PRECISIONS}
    torch.set_num_threads(threads)
    out = {"steps": steps, "cores": n, "repeats": rows, "ratio": ratio, "default_space_trial": trial}
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        print(f"ratio over {repeats} repeats: " + "; ".join(
            f"{p} x{r['min']:.2f} .. x{r['max']:.2f} (spread {100 * r['spread']:.0f} %)" for p, r in ratio.items()))
        for p, t in trial.items():
            print(f"one 15-epoch trial of the default space's model6 on one core, {p}: "
                  f"{t['trial_15_epochs_s'] / 60:.1f} core-minutes ({t['train_img_s']:.0f} img/s)")
    return out


def engine(root, steps: int, threads: int, data=None, pooled_dropout: bool = True,
           precision: str = "fp32") -> float:
    """Images per second of this engine: one epoch of `steps` batches through the real loop."""
    data = data or load_mnist(root, download=False)
    split = make_split(data, train_limit=steps * BATCH, eval_limit=BATCH)
    cfg = TrainConfig(epochs=1, threads=threads, pooled_dropout=pooled_dropout, precision=precision)
    res = train(BASELINES["model6"].spec, cfg, split, quiet=True)
    return steps * BATCH / res.history[0]["seconds"]


def _engine_worker(job: dict):
    """One study-like process running engine(**job): its images/s and its own peak RSS (MB, torch
    itself included)."""
    img_s = engine(**job)
    return img_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def family_cost(data, name: str, steps: int, precision: str = "fp32") -> dict:
    """One core (1 thread) on a model of one family, with its own recipe: training images/s over
    `steps` batches, the seconds to score the 10,000 validation images, and from both the cost of
    one 15-epoch trial of a study (50,000 train + 10,000 validation per epoch)."""
    from space.baselines import BASELINES, REFERENCES
    from space.model import evaluate
    from space.spec import count_params
    from space.target import EPOCH_LIMIT
    b = {**BASELINES, **REFERENCES}[name]
    cfg = TrainConfig.from_dict({**b.recipe, "epochs": 1, "threads": 1, "precision": precision})
    split = make_split(data, train_limit=steps * cfg.batch_size, eval_limit=cfg.batch_size)
    res = train(b.spec, cfg, split, quiet=True)
    img_s = steps * cfg.batch_size / res.history[0]["seconds"]
    full = make_split(data)
    t0 = time.perf_counter()
    evaluate(res.model, full.eval_images, full.eval_labels)
    eval_s = time.perf_counter() - t0
    n_train = len(full.train_labels)
    trial_s = EPOCH_LIMIT * (n_train / img_s + eval_s)
    return {"model": name, "params": count_params(b.spec), "batch_size": cfg.batch_size, "precision": precision,
            "train_img_s": img_s, "val_eval_s": eval_s, "trial_15_epochs_s": trial_s}


def run_families(root, steps: int = 100, as_json: bool = False) -> list[dict]:
    """The cost of a trial for a model of each family of the space, measured in one run."""
    data = load_mnist(root, download=False)
    threads = torch.get_num_threads()
    rows = [family_cost(data, name, steps) for name in ("model6", "public3k7")]
    torch.set_num_threads(threads)  # train() set 1 for the measurement
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"one core (1 thread), {steps} training steps each, 50,000 train / 10,000 val per epoch")
        for r in rows:
            print(f"  {r['model']:<10} {r['params']:>6,} params, batch {r['batch_size']:>3}: "
                  f"{r['train_img_s']:7.0f} img/s, val scoring {r['val_eval_s']:4.1f} s, "
                  f"one 15-epoch trial {r['trial_15_epochs_s'] / 60:5.1f} core-minutes")
    return rows


def profile_engine(root, steps: int = 20) -> str:
    from torch.profiler import profile, ProfilerActivity
    data = load_mnist(root, download=False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine(root, steps, 1, data)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


def run_bench(root, steps: int = 100, as_json: bool = False, profile: bool = False) -> dict:
    data = load_mnist(root, download=False)  # validates the files first: one-line error if bad
    root = data.root
    dataset_mb = sum(t.numel() * t.element_size() for t in
                     (data.train_images, data.train_labels, data.test_images, data.test_labels)) / 1e6
    default_threads = torch.get_num_threads()
    r = {"steps": steps, "batch_size": BATCH, "cores": mp.cpu_count(), "default_threads": default_threads}
    r["conventional_img_s"] = conventional(root, steps)
    torch.set_num_threads(default_threads)
    r["engine_img_s"] = engine(root, steps, default_threads, data)
    r["engine_1thread_img_s"] = engine(root, steps, 1, data)
    r["engine_1thread_nn_dropout_img_s"] = engine(root, steps, 1, data, pooled_dropout=False)
    # A study runs one single-threaded process per core: measure that aggregate too.
    n = mp.cpu_count()
    with mp.get_context("spawn").Pool(n) as pool:
        r["engine_processes"] = n
        per_process = pool.map(_engine_worker, [{"root": root, "steps": steps, "threads": 1}] * n)
    r["engine_1thread_per_process_total_img_s"] = sum(img_s for img_s, _ in per_process)
    r["training_process_peak_rss_mb"] = max(rss for _, rss in per_process)
    torch.set_num_threads(default_threads)
    r["ratio_engine"] = r["engine_img_s"] / r["conventional_img_s"]
    r["ratio_processes"] = r["engine_1thread_per_process_total_img_s"] / r["conventional_img_s"]
    r["dataset_in_memory_mb"] = dataset_mb
    if as_json:
        print(json.dumps(r, indent=2))
    else:
        print(f"model6, batch {BATCH}, {steps} steps each, {r['cores']} cores")
        print(f"  conventional (PIL transforms, DataLoader 2 workers, nn.Dropout, {default_threads} threads): "
              f"{r['conventional_img_s']:8.0f} img/s  ({60000 / r['conventional_img_s']:.1f} s/epoch)")
        print(f"  engine, {default_threads} threads:                     {r['engine_img_s']:8.0f} img/s  "
              f"({60000 / r['engine_img_s']:.1f} s/epoch)  x{r['ratio_engine']:.2f}")
        print(f"  engine, 1 thread:                      {r['engine_1thread_img_s']:8.0f} img/s")
        print(f"  engine, 1 thread, nn.Dropout masks:    {r['engine_1thread_nn_dropout_img_s']:8.0f} img/s")
        print(f"  engine, {n} processes x 1 thread (how studies run): "
              f"{r['engine_1thread_per_process_total_img_s']:8.0f} img/s total  x{r['ratio_processes']:.2f}")
        print(f"  dataset in memory: {dataset_mb:.0f} MB; peak RSS of one training process "
              f"(torch included): {r['training_process_peak_rss_mb']:.0f} MB")
    if profile:
        print(profile_engine(root))
    return r
