"""Where one training step of a shipped model goes, on one thread: torch profiler over train()
on the first N real training images (search split), the model file's own spec and recipe.

    .venv/bin/python experiments/step-cost/step_profile.py models/under3762.pt2 6400
"""
import sys, time
sys.path.insert(0, ".")
import torch
from torch.profiler import profile, ProfilerActivity
from storage.modelfile import load_model_file
from space.spec import ArchSpec
from search.train import train, TrainConfig
from search.data import load_mnist, make_split

path, n = sys.argv[1], int(sys.argv[2])
_, meta = load_model_file(path)
spec = ArchSpec.from_dict(meta["spec"])
cfg = TrainConfig(**{**meta["config"], "epochs": 1, "threads": 1})
split = make_split(load_mnist(sys.argv[3] if len(sys.argv) > 3 else None, download=False), train_limit=n, eval_limit=1000)
train(spec, cfg, split, quiet=True)  # warm-up
t0 = time.perf_counter()
train(spec, cfg, split, quiet=True)
dt = time.perf_counter() - t0
print(f"{spec.name}: batch {cfg.batch_size}, {n} images + 1000 scored in {dt:.2f} s: {n / dt:.0f} img/s")
with profile(activities=[ProfilerActivity.CPU]) as prof:
    train(spec, cfg, split, quiet=True)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
