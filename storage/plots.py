"""PNG plots of training runs and studies (matplotlib, no display needed): the one place that draws.

Every plot follows the same conventions, set here once: a bare Figure (no pyplot, no display, no
global state), a light grid, the target as one grey dashed line, saved at DPI into a folder made
for it. report and front compute what to show (storage/report.py) and draw it here.
"""
from __future__ import annotations

from pathlib import Path

from space.target import TARGET_ACC
from storage.records import StudySettings, TrialRecord

import matplotlib
from matplotlib.figure import Figure  # a bare Figure: no pyplot, no display, no global state

DPI = 110


def _figure(figsize: tuple[float, float], ncols: int = 1):
    """A bare Figure and its axes (one, or a row of ncols)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, ncols)


def _target_line(ax) -> None:
    ax.axhline(TARGET_ACC, color="grey", ls="--", lw=0.8)


def _finish(ax, legend_fontsize: float | None = None, **legend) -> None:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_fontsize, **legend)


def _save(fig: Figure, path: Path, margins: dict | None = None) -> Path:
    """Fixed margins (subplots_adjust) when given, else a tight_layout pass; the folder is made."""
    if margins:
        fig.subplots_adjust(**margins)
    else:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def plot_curves(history: list[dict], eval_name: str, path: Path, title: str = "") -> Path:
    """Accuracy and loss per epoch, train vs evaluation."""
    epochs = [h["epoch"] for h in history]
    # a bare Figure with fixed margins: no pyplot state and no tight_layout pass. Every trial plots
    # once; this took a plot from 0.38 s to 0.25 s (mean of 5, commit 5f53efe), which adds up over
    # the hundreds of tiny trials of the load tests.
    fig, (ax_acc, ax_loss) = _figure((11, 4), ncols=2)
    for key, ax in (("acc", ax_acc), ("loss", ax_loss)):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"{eval_name}_{key}"] for h in history], "o-", label=eval_name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if key == "acc" else "cross-entropy loss")
        _finish(ax)
    if eval_name:
        _target_line(ax_acc)
    fig.suptitle(title)
    return _save(fig, path, margins=dict(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22))


def plot_study(study, order: list, front: list, out: Path, top: int) -> list[Path]:
    """`report --plots DIR`: history.png (each complete trial's score and the best so far),
    pareto.png (score vs parameters, the front, the budget) and top_curves.png (the per-epoch
    validation curves of the top trials). order: the complete trials, best first; front: the
    Pareto front's (score, params, trial)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    complete = sorted(order, key=lambda t: t.number)
    paths = []

    fig, ax = _figure((7, 4))
    xs = [t.number for t in complete]
    ys = [t.values[0] for t in complete]
    ax.plot(xs, ys, "o", label="complete trial")
    best, running = [], float("-inf")
    for y in ys:
        running = max(running, y)
        best.append(running)
    ax.step(xs, best, where="post", color="C3", label="best so far")
    _target_line(ax)
    ax.set(xlabel="trial", ylabel="consistency score (val %)", title=f"{study.study_name}: optimisation history")
    _finish(ax)
    paths.append(_save(fig, out / "history.png"))

    fig, ax = _figure((7, 4))
    ax.scatter([TrialRecord.of(t).params or 0 for t in complete], ys, label="complete trial")
    ax.plot([p for _, p, _ in front], [s for s, _, _ in front], "r-o", label="Pareto front")
    budget = StudySettings.of(study).max_params
    if budget is not None:
        ax.axvline(budget, color="grey", ls="--", lw=0.8, label="budget")
    ax.set(xlabel="parameters", ylabel="consistency score (val %)", title="accuracy vs parameters")
    _finish(ax)
    paths.append(_save(fig, out / "pareto.png"))

    fig, ax = _figure((7, 4))
    for t in order[:min(top, 8)]:
        rec = TrialRecord.of(t)
        ax.plot([e["epoch"] for e in rec.history], [e["val_acc"] for e in rec.history], "o-", ms=3,
                label=f"trial {t.number} ({rec.params or 0:,})")
    _target_line(ax)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="per-epoch curves of the top trials")
    lo = min([e["val_acc"] for t in order[:8] for e in TrialRecord.of(t).history[1:]] or [98])
    ax.set_ylim(max(lo - 0.2, 90), None)
    _finish(ax, legend_fontsize=7)
    paths.append(_save(fig, out / "top_curves.png"))
    return paths


FRONT_FLOOR = 98.0  # `front`'s plot starts here: the targets are 99.4-99.5, and one study's weak trials flattened the rest


STUDY_MARKERS = "os^D"  # after tab20's 20 colours, the next 20 studies take the next marker


def study_style(i: int) -> tuple[tuple, str]:
    """The colour and marker of the i-th study on `front`'s plot: tab20's colours (the default cycle
    repeats after 10), then again with the next marker; distinct for 80 studies (at 21, the 21st had
    taken find-5k's colour).

    >>> len({study_style(i) for i in range(80)}), study_style(0)[1], study_style(20)[1]
    (80, 'o', 's')
    """
    colours = matplotlib.colormaps["tab20"].colors
    return colours[i % len(colours)], STUDY_MARKERS[(i // len(colours)) % len(STUDY_MARKERS)]


def plot_front(per_study: dict, best: list[dict], out: Path) -> Path:
    """`front -o FILE.png`: every complete trial of each study, the front over all of them, the
    seed-robust scores find confirmed (hollow, on a stem from the search score) and find's test
    verdicts. per_study: study name -> rows as `front` builds them; best: the front's rows."""
    fig, ax = _figure((9.5, 4.8))
    for i, (name, rows) in enumerate(per_study.items()):
        colour, marker = study_style(i)
        ax.scatter([r["params"] for r in rows], [r["score"] for r in rows], s=18, label=name,
                   color=colour, marker=marker)
    ax.plot([r["params"] for r in best], [r["score"] for r in best], "k--", lw=1, label="front (all studies)")
    confirmed = [r for rows in per_study.values() for r in rows if r["robust"] is not None]
    if confirmed:
        # each confirmed trial: a grey stem from its search (seed-0) score down to its seed-robust one
        for r in confirmed:
            ax.plot([r["params"], r["params"]], [r["score"], r["robust"]], color="0.5", lw=0.8)
        ax.scatter([r["params"] for r in confirmed], [r["robust"] for r in confirmed], s=26, facecolors="none",
                   edgecolors="k", lw=0.9, label="seed-robust (find confirm)", zorder=3)
    for r in (r for rows in per_study.values() for r in rows if r["verified"] is not None):
        # every verified trial, on the front or not, at the score it was chosen by (robust if confirmed)
        y = r["score"] if r["robust"] is None else r["robust"]
        ax.annotate("test PASS" if r["verified"] else "test FAIL", (r["params"], y),
                    textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set(xlabel="parameters", ylabel="consistency score (validation %)",
           title="complete trials: validation accuracy vs parameters (seed 0; hollow: min over seeds)")
    below = sum(r["score"] < FRONT_FLOOR for rows in per_study.values() for r in rows)
    if below and any(r["score"] >= FRONT_FLOOR for r in best):
        # a cold study's first random draws (88-95 %) squeezed the 99 % region to a line
        ax.set_ylim(bottom=FRONT_FLOOR)
        ax.text(0.01, 0.01, f"{below} trial(s) below {FRONT_FLOOR:g} % not shown", transform=ax.transAxes,
                fontsize=7, color="0.35")
    # the legend beside the axes: inside, it covered the smallest models, where the front is drawn
    _finish(ax, legend_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, out, margins=dict(left=0.09, right=0.80, bottom=0.12, top=0.92))
