"""Model files: a torch.export ExportedProgram (.pt2) that plain PyTorch loads without this project.

The program takes float images in [0, 1], shape (N, 1, 28, 28), and normalises them itself. The
spec, parameter count, metrics and receptive-field table travel inside the file as
extra_files["mnist_nas.json"].
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch

from space.model import Normalised, build_model
from space.rf import receptive_field
from space.spec import ArchSpec, count_params, parse_json
from storage import records
from storage.records import ConfirmRow, FindRecord, TrialRecord, VerifyRow, WeightsFile, verify_key
from storage.archive import UnsafeModelFile, check_model_archive
from storage.provenance import describe_training, describe_versions, made_by, training_record
from storage.artifacts import ArtifactSink, verified_weights_path
from storage.db import StudyError, load_study, storage_url
from storage.outputs import check_output
from storage.ranking import get_trial

META_NAME = "mnist_nas.json"
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"  # torch.load reads it on every call


def build_trained(weights: WeightsFile) -> tuple[ArchSpec, torch.nn.Module]:
    spec = ArchSpec.from_dict(weights.spec)
    model = build_model(spec, dropout=weights.config.get("dropout", 0.0))
    model.load_state_dict(weights.state_dict)
    return spec, Normalised(model).eval()


def export_program(module: torch.nn.Module) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.export.export(module.eval(), (torch.rand(4, 1, 28, 28),), dynamic_shapes=({0: batch},))


def save_model_file(module, spec: ArchSpec, meta: dict, path: Path, onnx_path: Path | None = None) -> dict:
    meta = {"format": "mnist-nas model file 1", "input": "float32 (N, 1, 28, 28) in [0, 1]",
            "output": "logits (N, 10)", "spec": spec.to_dict(), "params": count_params(spec),
            "receptive_field": [asdict(r) for r in receptive_field(spec)], **meta}
    ep = export_program(module)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(ep, str(path), extra_files={META_NAME: json.dumps(meta)})
    except (OSError, RuntimeError) as e:  # torch's zip writer raises RuntimeError where a folder refuses files
        raise StudyError(f"cannot write {path}: {getattr(e, 'strerror', None) or type(e).__name__}") from None
    if onnx_path:
        try:
            onnx_path.parent.mkdir(parents=True, exist_ok=True)
            torch.onnx.export(ep, (torch.rand(4, 1, 28, 28),), str(onnx_path), input_names=["images"],
                              output_names=["logits"], dynamo=True, verbose=False,
                              external_data=False)  # one file: these weights are kilobytes, not the 2 GB protobuf limit
        except Exception as e:  # the .pt2 stands; say the ONNX file did not
            raise StudyError(f"wrote {path} but not {onnx_path}: {type(e).__name__}") from None
    return meta


def load_model_file(path) -> tuple[torch.nn.Module, dict]:
    """(callable module, metadata). Refuses, in one line, anything that is not such a file."""
    path = Path(path)
    try:
        if not path.is_file():
            raise StudyError(f"no such model file: {path}")
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:  # a name too long, no permission, an I/O error
        raise StudyError(f"cannot read the model file {path}: {e.strerror or type(e).__name__}") from None
    if head != b"PK\x03\x04":  # a .pt2 is a zip archive
        raise StudyError(f"{path} is not a model file (not a torch.export .pt2 archive)")
    try:
        check_model_archive(path)
    except UnsafeModelFile as e:
        raise StudyError(f"{path} is refused: {e}") from None
    extra = {META_NAME: ""}
    quiet = logging.getLogger("torch.export")
    level, quiet.level = quiet.level, logging.CRITICAL  # torch logs a traceback before raising
    # Defence in depth: should any torch.load inside still ask for full unpickling, refuse it.
    forced = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        ep = torch.export.load(str(path), extra_files=extra)
    except Exception as e:
        raise StudyError(f"{path} is not a model file (torch.export.load failed: {type(e).__name__})") from None
    finally:
        quiet.setLevel(level)
        if forced is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = forced
    try:
        meta = parse_json(extra[META_NAME], StudyError) if extra[META_NAME] else {}
    except StudyError as e:
        raise StudyError(f"{path} has broken metadata ({META_NAME}: {e})") from None
    if not isinstance(meta, dict):
        raise StudyError(f"{path} has broken metadata ({META_NAME} is not a JSON object)")
    return ep.module(), meta


def _outputs(output, onnx) -> tuple[Path, Path | None]:
    """The .pt2 and .onnx paths asked for, refused before any work when they cannot be such files."""
    out = check_output(output, what="-o", suffixes=(".pt2",))
    return out, check_output(onnx, what="--onnx", suffixes=(".onnx",)) if onnx else None


def export_trial(*, study_name: str, storage: str | None = None, trial: str = "best",
                 output: str | Path, onnx: str | Path | None = None, quiet: bool = False) -> dict:
    """Write a trial's stored weights as a model file (and ONNX beside it); returns the metadata."""
    out, onnx = _outputs(output, onnx)
    study = load_study(study_name=study_name, storage=storage)
    trial = get_trial(study, trial)
    weights = ArtifactSink(storage_url(study_name=study_name, storage=storage), study_name).load_weights(trial)
    try:
        spec, module = build_trained(weights)
    except Exception as e:  # a tampered or truncated artifact: say so, in one line
        raise StudyError(f"stored weights of trial {trial.number} do not fit its spec "
                         f"({type(e).__name__}); the artifact is damaged") from None
    record = TrialRecord.of(trial)
    run = record.provenance  # what the trial trained on and what made it (trials run before records: unknown)
    meta = save_model_file(module, spec, {
        "study": study.study_name, "trial": trial.number, "consistency_score": trial.values[0],
        "config": weights.config, "epochs": record.history, "last_k": record.last_k,
        "trained_on": run.trained_on if run else None,
        "provenance": run.to_stored() if run else None, "exported_by": made_by()}, out, onnx)
    if not quiet:
        print(f"wrote {out} (trial {trial.number}, {meta['params']:,} params, consistency score "
              f"{trial.values[0]:.2f}){f' and {onnx}' if onnx else ''}")
    return meta


def export_verified(*, study_name: str, storage: str | None = None, trial: str = "best",
                    output: str | Path, onnx: str | Path | None = None, quiet: bool = False, study=None) -> dict:
    """Write the model `find` verified for a trial: its verify run's seed-1 weights (trained on all
    60,000), the verify table and confirm scores in the metadata, ONNX, spec JSON and card beside
    it (FILE.onnx unless `onnx` says otherwise). `trial` 'best' is the study's find winner. Reads
    the study only; nothing is retrained. Returns the metadata."""
    out, onnx = _outputs(output, onnx or Path(output).with_suffix(".onnx"))
    study = study or load_study(study_name=study_name, storage=storage)
    found = FindRecord.of(study)
    if trial != "best":  # a number: get_trial parses it and refuses a trial the study lacks
        number = get_trial(study, trial).number
    elif found.winner is not None:  # 'best' here is find's winner, not get_trial's best score
        number = found.winner
    else:
        raise StudyError(f"study {study.study_name!r} has no model that passed `find`'s verify stage")
    verified = found.verify(number)
    if verified is None:
        raise StudyError(f"trial {number} of study {study.study_name!r} was not verified by `find`")
    if not verified.passed:
        raise StudyError(f"trial {number} failed `find`'s verify stage (target {verified.target} in each of "
                         f"the last {verified.k} epochs); only a model that held it is exported as verified")
    url = storage_url(study_name=study.study_name, storage=storage)
    path = verified_weights_path(url, study.study_name, number, 1)
    if not path.is_file():
        raise StudyError(f"the verified weights {path} are missing; delete the study attribute "
                         f"{verify_key(number)} and rerun `find` to retrain them")
    try:
        weights = WeightsFile.load(path)  # data only: a stored file never runs code
        spec, module = build_trained(weights)
    except Exception as e:
        raise StudyError(f"the verified weights {path} do not load ({type(e).__name__}); the file is damaged") from None
    seed1 = verified.results[1]
    device = (verified.devices or {}).get(1)
    made = verified.provenance  # the verify runs' record; rows made before records: None
    if made:  # the record of the seed this file holds, from the facts of the verify runs
        run = training_record(final=True, train_limit=made.train_limit, epochs=verified.epochs, seeds=[1],
                              devices=device, images=made.images, available=made.available, made=made.made_by)
        trained_on = run.trained_on
    else:  # an older row: what the study's settings say
        run, trained_on = None, describe_training(final=True, train_limit=_train_limit(study), epochs=verified.epochs,
                                                  seeds=[1], device=device)
    confirm = found.confirm(number)
    meta = save_model_file(module, spec, {
        "study": study.study_name, "trial": number, "config": weights.config,
        "trained_on": trained_on + " (seed 1 of the verify stage)", "provenance": run.to_stored() if run else None, "exported_by": made_by(),
        "test_acc_per_epoch": seed1, "test_acc": seed1[-1],
        "verify": verified.to_stored(), "confirm": confirm.to_stored() if confirm else {},
        "tests_used": list(found.candidates_tested()), "test_set_uses": found.test_set_uses().to_stored(),
        "protocol": _protocol(verified),
    }, out, onnx)
    spec_json, card = write_model_card(out, meta)
    if not quiet:
        print(f"wrote {out}, {onnx}, {spec_json} and {card} (trial {number}, {meta['params']:,} params, "
              f"test {seed1[-1]:.2f} % at the last epoch of seed 1)")
    return {**meta, "onnx": str(onnx), "spec_json": str(spec_json), "card": str(card)}


def _train_limit(study) -> int | None:
    """The study's stored --train-limit (verify trains on that many images too)."""
    v = records.StudySettings.of(study).train_limit
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _protocol(verified: VerifyRow) -> str:
    """The rule the verdict was made by, from the row itself."""
    base = (f">= {verified.target} % on the official test set in each of the last {verified.k} of "
            f"{verified.epochs} epochs")
    hold = verified.hold
    if hold is None:
        return base + f", for each of seeds 1..{verified.seeds}"
    at_most = "?" if verified.max_seeds is None else verified.max_seeds
    return (base + f"; no seed below it, and P(a new seed holds) >= {hold.level:.0%} by {hold.method}, "
            f"from {hold.seeds} seeds (at least {verified.seeds}, at most {at_most})"
            + (f"; re-judged after the test set was seen (from target {verified.rejudged[-1].target})"
               if verified.rejudged else ""))


def score_loaded(module, path, images, labels) -> float:
    """Accuracy (%) of a loaded model file on uint8 images (N, 28, 28) and their labels."""
    from space.model import evaluate
    try:
        _, acc, _ = evaluate(module, images, labels, model_normalises=True)
    except Exception as e:
        raise StudyError(f"{path} does not take (N, 1, 28, 28) images: {type(e).__name__}") from None
    return acc


def describe_file(path, meta: dict) -> str:
    """'FILE (study 'x', trial 3): 4,321 params' from whatever well-formed metadata the file has."""
    study, trial, params = meta.get("study"), meta.get("trial"), meta.get("params")
    where = f" (study {study!r}, trial {trial})" if isinstance(study, str) and isinstance(trial, int) else ""
    count = f": {params:,} params" if isinstance(params, int) and not isinstance(params, bool) else ""
    return f"{path}{where}{count}"


def write_model_card(path: Path, meta: dict) -> list[Path]:
    """Beside a shipped FILE.pt2: FILE.spec.json (the architecture, as `train --arch` and `rf --arch`
    read it) and FILE.md (architecture, recipe, protocol, the verify table, the confirm scores)."""
    from storage import notes
    spec = ArchSpec.from_dict(meta["spec"])
    verify = VerifyRow.from_stored(meta["verify"])
    confirm = ConfirmRow.from_stored(meta["confirm"]) if meta.get("confirm") else None
    verify_on = (verify.provenance.trained_on if verify.provenance else None) or verify.trained_on
    # the settings this recipe used: OneCycle sets the rate itself, StepLR's step and gamma only
    # apply under StepLR; threads and the epoch-limit override say nothing about the model
    unused = {"onecycle": {"lr", "step_size", "gamma"}}.get(meta["config"].get("scheduler"), {"max_lr", "pct_start"})
    recipe = "\n".join(f"| {k} | {v} |" for k, v in meta["config"].items()
                       if k not in unused | {"threads", "allow_long"})
    card = "\n".join([
        f"# {path.stem}: {meta['params']:,} parameters, verified",
        "",
        f"From study `{meta['study']}`, trial {meta['trial']}. The file holds the model trained on "
        f"{meta['trained_on']}.",
        "",
        "**Made by:** " + (f"{describe_versions(meta['provenance']['made_by'])}; " if meta.get("provenance") else "")
        + (f"exported by {describe_versions(meta['exported_by'])}." if meta.get("exported_by") else ""),
        "",
        f"**Architecture:** {notes.describe_arch(spec)}",
        "",
        f"**Protocol:** {meta['protocol']}; candidates that met the test set in this study: "
        f"{len(meta.get('tests_used', []))}"
        + (f" (test-set uses: {meta['test_set_uses']['total']}, every verify seed and re-judgement counted)"
           if meta.get("test_set_uses") and verify.hold is not None else "") + ".",
        "",
        *([f"**Held:** {verify.describe_hold()}.", ""] if verify.hold is not None else []),
        notes.verify_markdown(verify.results, verify.k, verify.target, passed=verify.passed, hold=verify.hold,
                              title=f"Verify: retrained on {verify_on or 'all training images'}"
                                    f", the official test set scored after every epoch."),
        "",
        (f"Where each verify seed trained: "
         f"{', '.join(f'{k}: {v}' for k, v in sorted(verify.devices.items()))}"
         + (" (runs on a GPU are not bit-for-bit repeatable)" if any(v.startswith("cuda") for v in
                                                                    verify.devices.values()) else "") + "."
         if verify.devices else ""),
        "",
        (f"Confirm (validation, before the test set was used): consistency score per seed "
         f"{' '.join(f'{s:.2f}' for s in confirm.scores)}, seed-robust {confirm.robust:.2f}."
         if confirm and confirm.scores else ""),
        "",
        "## Recipe", "", "| setting | value |", "|---|---|", recipe,
        "",
        "## Use it", "",
        "```python",
        "import torch",
        f"model = torch.export.load('{path.name}').module()  # float images (N, 1, 28, 28) in [0, 1]",
        "logits = model(torch.rand(8, 1, 28, 28))",
        "```", "",
    ])
    spec_path, card_path = path.with_suffix(".spec.json"), path.with_suffix(".md")
    try:
        spec_path.write_text(json.dumps(meta["spec"], indent=1) + "\n")
        card_path.write_text(card)
    except OSError as e:
        raise StudyError(f"wrote {path} but not its card: {e.strerror or type(e).__name__}") from None
    return [spec_path, card_path]
