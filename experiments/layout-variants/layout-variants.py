"""One-thread training img/s (forward+backward+SGD step, batch 64, random inputs) of a spec in the
default memory layout (plain) or channels_last (cl); also nomkldnn (oneDNN off), bf16 (the forward
pass and loss under bfloat16 autocast, as a recipe's "precision": "bf16" trains) and cl-bf16 (both).

    for v in plain cl plain cl; do .venv/bin/python experiments/layout-variants/layout-variants.py $v models/under5k.spec.json; done
    for v in plain cl nomkldnn plain; do .venv/bin/python experiments/layout-variants/layout-variants.py $v \\
        experiments/separable-check/find-4k-sep-trial28.spec.json; done
    for f in experiments/bf16-check/8k2.spec.json models/under5k.spec.json \
        experiments/separable-check/find-4k-sep-trial28.spec.json; do
      for v in plain bf16 cl cl-bf16 plain bf16; do .venv/bin/python experiments/layout-variants/layout-variants.py $v $f; done; done
"""
import sys, time
sys.path.insert(0, ".")  # run from the repository root
import torch, torch.nn.functional as F
torch.set_num_threads(1)
from space.spec import ArchSpec
from space.model import build_model

variant, path = sys.argv[1], sys.argv[2]
spec = ArchSpec.from_json(open(path).read())
torch.manual_seed(0)
model = build_model(spec)  # no dropout: the layout is what is compared
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
if variant in ("cl", "cl-bf16"):
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
if variant == "nomkldnn":
    torch.backends.mkldnn.enabled = False
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant in ("bf16", "cl-bf16")):
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


for _ in range(5):
    step()
t0, n = time.perf_counter(), 60
for _ in range(n):
    step()
print(variant, spec.name, f"{n * 64 / (time.perf_counter() - t0):.0f} img/s")
