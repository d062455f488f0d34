"""One-thread img/s of model6's training step (batch 64) in variants: plain, channels_last, compiled."""
import sys, time
sys.path.insert(0, ".")  # run from the repository root
import torch, torch.nn.functional as F
torch.set_num_threads(1)
from space.baselines import BASELINES
from space.model import build_model
spec = BASELINES[sys.argv[2] if len(sys.argv) > 2 else "model6"].spec
variant = sys.argv[1]
torch.manual_seed(0)
model = build_model(spec, dropout=0.05)
x = torch.randn(64, 1, 28, 28); y = torch.randint(0, 10, (64,))
if variant == "cl":
    model = model.to(memory_format=torch.channels_last); x = x.contiguous(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
fwd = model
if variant == "compile":
    fwd = torch.compile(model)
def step():
    loss = F.cross_entropy(fwd(x), y); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
t0 = time.perf_counter()
for _ in range(5): step()
warm = time.perf_counter() - t0
t0 = time.perf_counter(); n = 150
for _ in range(n): step()
print(variant, spec.name if hasattr(spec, "name") else "", f"warm-up {warm:.1f}s", f"{n * 64 / (time.perf_counter() - t0):.0f} img/s")
