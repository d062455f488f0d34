"""Dashboard notes: what a person reads about a trial or a study in optuna-dashboard.

optuna-dashboard renders a note as GitHub markdown (tables, code blocks, images). A finished trial
gets: the architecture in words, its parameters against the budget, the receptive-field table, the
torchinfo summary, the recipe, the per-epoch accuracies, why it ended, and its curves as a PNG
artifact embedded in the note. The PNG must be uploaded while the trial is still running (Optuna
refuses uploads to a finished trial); notes themselves live in the study's system attributes, so
verification results can be added to a finished trial's note later. The study's note holds the
space, the budget, the protocol and the current best.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import optuna

from space.hold import seed_held
from space.ops import ACTIVATIONS, OPS
from space.rf import format_rf_table
from space.spec import ArchSpec
from space.target import EPOCH_LIMIT, TARGET_ACC
from storage.records import HoldEstimate, Prior, StudySettings, TrialRecord, set_trial_attrs

VERIFY_HEADING = "## Verification"


def describe_arch(spec: ArchSpec) -> str:
    """'3 blocks: [8 8 8, pad 1] -> pool -> [...]; Conv-BN-ReLU; GAP, 1x1 head'. A depthwise 3x3
    followed by a 1x1 (a separable pair) reads as one 3x3 of the 1x1's width; other ops read as
    their registry word (space.ops: "12f" factorized, "12/2" strided, which ends its block)."""
    blocks, current, handovers = [], [], []
    for layer in spec.layers:
        op = OPS[layer.op]
        if op.convolves and layer.op != "head":
            current.append(layer)
        if op.downsamples:
            blocks.append(current)
            current = []
            handovers.append("stride 2" if op.convolves else "max-pool")
    parts, separable, linear = [], False, set()
    for convs in blocks:
        wide, pads, squeeze, i = [], set(), None, 0
        while i < len(convs):
            l = convs[i]
            pair = l.kernel == 3 and l.groups > 1 and i + 1 < len(convs) and convs[i + 1].kernel == 1
            if pair:  # depthwise (or grouped) 3x3, then the 1x1 that sets the width
                wide.append(str(convs[i + 1].out) + ("f" if l.op == "fconv" else ""))  # "12f": factorized depthwise
                pads.add(l.padding)
                separable, i = True, i + 2
                linear.add(l.linear)
                continue
            if l.kernel == 3:
                wide.append(OPS[l.op].word(l))
                pads.add(l.padding)
            else:
                squeeze = l
            i += 1
        text = " ".join(wide) + (f", pad {pads.pop()}" if len(pads) == 1 else "")
        if squeeze:
            text += f", 1x1 squeeze to {squeeze.out}"
        parts.append(f"[{text}]")
    act = ACTIVATIONS[spec.activation]
    order = f"Conv-{act}-BN" if spec.order == "relu-bn" else f"Conv-BN-{act}"
    depthwise = ("a linear depthwise 3x3 (no ReLU/BN)" if linear == {True}
                 else "a depthwise 3x3 (some linear)" if True in linear else "a depthwise 3x3")
    kind = "3x3 convolutions" + (f" (depthwise-separable after the first: {depthwise}, then a 1x1 to "
                                 "the width shown)" if separable else "")
    for name in dict.fromkeys(l.op for l in spec.layers):  # each op's own legend, once, in layer order
        if OPS[name].legend:
            kind += f" ({OPS[name].legend})"
    joined = parts[0] + "".join(f" → {h} → {p}" if h == "max-pool" else f" → {p}"
                                for h, p in zip(handovers, parts[1:]))
    return f"{len(blocks)} blocks of {kind} {joined}; {order}; GAP, 1x1 head"


def torchinfo_summary(spec: ArchSpec) -> str:
    import torchinfo
    from space.model import build_model
    model = build_model(spec)
    return str(torchinfo.summary(model, input_size=(1, spec.in_channels, 28, 28), verbose=0,
                                 col_names=("output_size", "num_params")))


def epochs_table(history: list[dict], eval_name: str = "val") -> str:
    rows = ["| epoch | lr | train acc | " + eval_name + " acc | seconds |", "|---|---|---|---|---|"]
    for h in history:
        rows.append(f"| {h['epoch']} | {h['lr']:.4g} | {h['train_acc']:.2f} | {h[eval_name + '_acc']:.2f} | "
                    f"{h['seconds']:.0f} |")
    return "\n".join(rows)


def trial_note(*, number: int, spec: ArchSpec, params: int, max_params: int, recipe: dict, history: list[dict],
               ended: str, curves_url: str | None = None, eval_name: str = "val", trained_on: str | None = None) -> str:
    """trained_on: the run's provenance sentence (storage.provenance.training_record's .text)."""
    from space.searchspace import SCHEDULER_OF
    shown = {k: v for k, v in recipe.items() if k not in ("threads", "allow_long", "pooled_dropout", "fill")
             and recipe.get("scheduler") in SCHEDULER_OF.get(k, (recipe.get("scheduler"),))}
    recipe_lines = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
    parts = [f"# Trial {number}: {params:,} parameters ({100 * params / max_params:.0f} % of the "
             f"budget of fewer than {max_params:,})",
             f"**Ended:** {ended}",
             f"**Architecture:** {describe_arch(spec)}",
             f"**Recipe:** {recipe_lines}"]
    if trained_on:
        parts.append(f"**Trained on:** {trained_on}")
    if curves_url:
        parts.append(f"![accuracy and loss per epoch]({curves_url})")
    if history:
        parts.append("## Per epoch (the search split: trained on its training part, scored on validation)\n\n"
                     + epochs_table(history, eval_name))
    parts.append("## Receptive field\n\n" + format_rf_table(spec))
    parts.append("## torchinfo summary\n\n```\n" + torchinfo_summary(spec) + "\n```")
    return "\n\n".join(parts) + "\n"


def short_note(*, number: int, params: int, max_params: int, ended: str, spec: ArchSpec | None = None) -> str:
    """For a trial refused or pruned: why, and when."""
    arch = f"\n\n**Architecture:** {describe_arch(spec)}" if spec is not None else ""
    return f"# Trial {number}: {params:,} parameters (budget: fewer than {max_params:,})\n\n**Ended:** {ended}{arch}\n"


def pruned_note(*, number: int, params: int, max_params: int, ended: str, spec: ArchSpec,
                history: list[dict]) -> str:
    """A pruned trial's note: why and when, and the epochs it ran."""
    body = short_note(number=number, params=params, max_params=max_params, ended=ended, spec=spec)
    return body + ("\n" + epochs_table(history) + "\n" if history else "")


def save_trial_note(trial: optuna.Trial, body: str) -> None:
    from optuna_dashboard import save_note
    save_note(trial, body)


def upload_curves(trial: optuna.Trial, store, history: list[dict], eval_name: str = "val") -> str | None:
    """Plot and upload the curves while the trial runs; the dashboard URL path of the PNG. A run of
    one epoch has no curve (its one point is in the note's table), and is not plotted."""
    if store is None or len(history) < 2:
        return None
    from optuna.artifacts import upload_artifact
    from optuna_dashboard.artifact import get_artifact_path
    from storage.plots import plot_curves
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial{trial.number}-curves.png"
        plot_curves(history, eval_name, path, title=f"trial {trial.number}")
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
    set_trial_attrs(trial, curves_artifact=artifact_id)
    return get_artifact_path(trial, artifact_id)


def _finished_trial_handle(study: optuna.Study, number: int) -> optuna.Trial:
    """A Trial object for a finished trial: save_note only needs its study and id."""
    frozen = study.get_trials(deepcopy=False)[number]
    return optuna.trial.Trial(study, frozen._trial_id)


def add_section(study: optuna.Study, number: int, heading: str, body: str) -> None:
    """Add (or replace) a section of a finished trial's note, e.g. verification results."""
    from optuna_dashboard import get_note, save_note
    handle = _finished_trial_handle(study, number)
    note = get_note(handle) or f"# Trial {number}\n"
    if heading in note:
        start = note.index(heading)
        rest = note[start + len(heading):]
        nxt = rest.find("\n## ")
        note = note[:start] + (rest[nxt + 1:] if nxt >= 0 else "")
    save_note(handle, note.rstrip() + f"\n\n{heading}\n\n{body.strip()}\n")


def verify_markdown(results: dict, k: int, target: float, *, title: str, passed: bool | None,
                    hold: HoldEstimate | None = None) -> str:
    """A seed table (results: seed -> accuracy per epoch; a seed is an int, or a name such as
    "search" for the search's own run, listed first). With a target: each seed held or below it;
    `passed` the verdict, by the hold rule (space.hold) when `hold` is given, else by the
    every-seed rule it was judged under."""
    rows = [f"{title}", "", f"| seed | best | last {k} | min | result |", "|---|---|---|---|---|"]
    numbered = lambda seed: str(seed).isdigit()
    for seed, accs in sorted(results.items(), key=lambda kv: (numbered(kv[0]), int(kv[0]) if numbered(kv[0]) else 0)):
        last = accs[-k:]
        words = ("held", "below") if hold is not None else ("PASS", "FAIL")  # old rows' cards read as written
        verdict = "" if target is None else words[0 if seed_held(accs, k, target) else 1]
        rows.append(f"| {seed} | {max(accs):.2f} | {' '.join(f'{a:.2f}' for a in last)} | {min(last):.2f} | {verdict} |")
    if passed is not None and hold is not None:
        rows += ["", f"**{'PASS' if passed else 'FAIL'}**: target ≥ {target} % in each of the last {k} epochs; "
                     f"P(a new seed holds) = {hold.hold_probability:.1%} from {hold.seeds} seeds "
                     f"(PASS needs ≥ {hold.level:.0%}; {hold.method})"]
    elif passed is not None:
        rows += ["", f"**{'PASS' if passed else 'FAIL'}**: target ≥ {target} % in each of the last {k} epochs "
                     "on every seed (judged before the hold estimate existed)"]
    return "\n".join(rows)


def describe_prior(prior: Prior | dict | None) -> str:
    """Where a study's first trials came from (storage.records.Prior, or its stored form)."""
    if prior is None:
        return "none from the prior (a study made before it existed, or with --no-warm-start)"
    if isinstance(prior, dict):
        prior = Prior.from_stored(prior)
    points = prior.points or []
    text = (f"{len(points)} from what earlier studies learnt, scaled to the budget: "
            + "; ".join(f"{p.source} x{p.scale:.2f} -> {p.params:,} params" for p in points)
            if points else "the prior had no design this space and budget can build")
    if prior.warm_from:
        text += f" (--warm-start {', '.join(prior.warm_from)})"
    return text


def study_note(study: optuna.Study, *, best: optuna.trial.FrozenTrial | None, counts: str) -> str:
    attrs = StudySettings.of(study)  # the settings (their meaning: search/config.py) and the space
    space = attrs.space or {}
    best_line = ("no complete trial yet" if best is None else
                 f"trial {best.number}: consistency score {best.values[0]:.2f} with "
                 f"{TrialRecord.of(best).params or 0:,} parameters")
    lines = [f"# Study {study.study_name}",
             f"**Budget:** fewer than {attrs.get('max_params', '?'):,} parameters; "
             f"{attrs.get('epochs', EPOCH_LIMIT)} epochs per trial."
             if isinstance(attrs.get("max_params"), int) else "**Budget:** not recorded",
             "**Protocol:** every trial trains on a fixed 5/6 of the MNIST training set (50,000 images"
             + (f"; the first {attrs['train_limit']:,} of them in this study" if attrs.get("train_limit") else "")
             + ") and is scored on the other 1/6 (10,000) after each epoch. Its value is the consistency score: "
             f"the minimum validation accuracy over its last {attrs.get('last_k', 3)} epochs. The test "
             f"set is used only by `verify` and `find`'s last stage (target ≥ {TARGET_ACC} % held).",
             f"**Trials:** {counts}",
             f"**Best so far:** {best_line}",
             f"**Start points:** {describe_prior(Prior.read(study.user_attrs))}",
             "## Search space\n\n```json\n" + json.dumps(space, indent=1) + "\n```"]
    return "\n\n".join(lines) + "\n"


KEPT_SECTIONS = (VERIFY_HEADING, "## Confirmation")  # results added after the trial ended


def _kept_sections(note: str) -> str:
    """The sections `verify` and `find` added to a note, to carry over when it is rewritten."""
    out, lines, keep = [], note.splitlines(), False
    for line in lines:
        if line.startswith("## "):
            keep = line.startswith(KEPT_SECTIONS)
        if keep:
            out.append(line)
    return "\n".join(out)


def rewrite_trial_notes(study: optuna.Study, store=None) -> int:
    """(Re)write the note of every finished trial from what it stored (for trials run before notes
    existed, or after an upgrade). Curves of a complete trial without a curves artifact are
    uploaded as a study artifact, since Optuna refuses uploads to a finished trial. Sections added
    by verify/find are kept. Returns how many notes were written."""
    from optuna_dashboard import get_note, save_note
    from optuna_dashboard.artifact import get_artifact_path
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    max_params = StudySettings.of(study).max_params
    written = 0
    for t in study.get_trials(deepcopy=False, states=states):
        rec = TrialRecord.of(t)
        handle = optuna.trial.Trial(study, t._trial_id)
        ended = rec.ended if rec.ended is not None else t.state.name.lower()
        if rec.spec is None or not isinstance(max_params, int):
            body = f"# Trial {t.number}\n\n**Ended:** {ended}\n"
        else:
            spec, params, history = ArchSpec.from_dict(rec.spec), rec.params, rec.history
            if t.state == optuna.trial.TrialState.COMPLETE:
                url = None
                if rec.curves_artifact:
                    url = get_artifact_path(handle, rec.curves_artifact)
                elif store is not None and len(history) >= 2:  # as upload_curves: one point is no curve
                    from optuna.artifacts import upload_artifact
                    from storage.plots import plot_curves
                    with tempfile.TemporaryDirectory() as tmp:
                        path = Path(tmp) / f"trial{t.number}-curves.png"
                        plot_curves(history, "val", path, title=f"trial {t.number}")
                        art = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
                    url = get_artifact_path(study, art)
                score = f"; consistency score {t.values[0]:.2f}" if t.values else ""
                body = trial_note(number=t.number, spec=spec, params=params, max_params=max_params,
                                  recipe=rec.config or {}, history=history, ended=ended + score, curves_url=url,
                                  trained_on=rec.provenance.text if rec.provenance else None)
            else:
                body = pruned_note(number=t.number, params=params, max_params=max_params, ended=ended, spec=spec,
                                   history=history)
        kept = _kept_sections(get_note(handle) or "")
        save_note(handle, body.rstrip() + ("\n\n" + kept + "\n" if kept else "\n"))
        written += 1
    refresh_study_note(study)
    return written


def refresh_study_note(study: optuna.Study) -> None:
    """Rewrite the study's note from what the study holds now."""
    from collections import Counter
    from optuna_dashboard import save_note
    from storage.report import trial_kind
    from storage.ranking import best_trial
    c = Counter(trial_kind(t) for t in study.get_trials(deepcopy=False))
    counts = ", ".join(f"{v} {k}" for k, v in sorted(c.items())) or "none yet"
    save_note(study, study_note(study, best=best_trial(study), counts=counts))
