"""PNG plots of training runs and studies (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

from space.target import TARGET_ACC

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], eval_name: str, path: Path, title: str = "") -> Path:
    """Accuracy and loss per epoch, train vs evaluation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for key, ax in (("acc", ax_acc), ("loss", ax_loss)):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"{eval_name}_{key}"] for h in history], "o-", label=eval_name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if key == "acc" else "cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
    if eval_name:
        ax_acc.axhline(TARGET_ACC, color="grey", ls="--", lw=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
