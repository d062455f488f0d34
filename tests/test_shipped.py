"""The shipped models (models/*.pt2): each loads with plain PyTorch, without this project on the
path, and scores on the real MNIST test set exactly the test accuracy its file records (seed 1 of
its verify stage, last epoch). Needs the real data (MNIST_DATA_DIR)."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SHIPPED = sorted((ROOT / "models").glob("*.pt2"))

PLAIN = """
import json, sys, numpy as np, torch
extra = {"mnist_nas.json": ""}
m = torch.export.load(sys.argv[1], extra_files=extra).module()
raw = sys.argv[2] + "/MNIST/raw/"
x = np.frombuffer(open(raw + "t10k-images-idx3-ubyte", "rb").read()[16:], np.uint8).reshape(-1, 1, 28, 28)
y = np.frombuffer(open(raw + "t10k-labels-idx1-ubyte", "rb").read()[8:], np.uint8)
with torch.no_grad():
    pred = torch.cat([m(torch.tensor(x[i:i + 250].copy()).float() / 255).argmax(1) for i in range(0, len(x), 250)])
print(json.dumps({"correct": int((pred.numpy() == y).sum()), "n": len(y), "meta": json.loads(extra["mnist_nas.json"]),
                  "first": pred[:200].tolist()}))
"""


@pytest.mark.real
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_shipped_model_scores_its_recorded_test_accuracy_under_plain_pytorch(path, real_root):
    r = subprocess.run([sys.executable, "-I", "-c", PLAIN, str(path), str(real_root)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    meta = out["meta"]
    assert out["n"] == 10000
    assert 100.0 * out["correct"] / out["n"] == pytest.approx(meta["test_acc"], abs=1e-9)
    verify = meta["verify"]
    assert verify["passed"] and meta["params"] < 8000
    assert all(min(accs[-verify["k"]:]) >= verify["target"] for accs in verify["results"].values())
    card = json.loads(path.with_suffix(".spec.json").read_text())
    assert card == meta["spec"]
    assert path.with_suffix(".onnx").is_file() and path.with_suffix(".md").is_file()
    # the ONNX file, whole on its own, predicts what the .pt2 predicts (ONNX's reference runtime)
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator
    assert not list(path.parent.glob(path.stem + ".onnx.*")), "the ONNX file should carry its weights"
    raw = (real_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()[16:16 + 200 * 784]
    x = np.frombuffer(raw, np.uint8).reshape(200, 1, 28, 28).astype(np.float32) / 255
    (logits,) = ReferenceEvaluator(onnx.load(str(path.with_suffix(".onnx")))).run(None, {"images": x})
    assert np.argmax(logits, 1).tolist() == out["first"]


def test_models_folder_holds_only_complete_shipments():
    """Each shipped .pt2 comes with its spec JSON, ONNX file and card (recipe, verify table)."""
    for p in SHIPPED:
        for suffix in (".spec.json", ".onnx", ".md"):
            assert p.with_suffix(suffix).is_file(), f"{p.name} ships without its {suffix}"
