"""The artifact store beside a study's database: its folder, the weights `find` keeps of a verify
run, and the trial weights a search stores (Optuna's artifact store)."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import optuna

from storage.db import StudyError, check_study_name, sqlite_path
from storage.records import TrialRecord, WeightsFile, set_trial_attrs


def artifact_dir(url: str, study_name: str) -> Path:
    """Beside a SQLite file: studies/x.db -> studies/x.artifacts/. Other URLs: ./studies/<name>.artifacts."""
    path = sqlite_path(url)
    if path is not None:
        return path.with_suffix(".artifacts")
    return Path("studies") / f"{check_study_name(study_name)}.artifacts"


def verified_weights_path(url: str, study_name: str, trial: int, seed: int) -> Path:
    """Where `find` keeps the weights of a verify run (one trial, one seed, trained on all 60,000)."""
    return artifact_dir(url, study_name) / "find" / f"trial{trial}-seed{seed}.pt"


class ArtifactSink:
    """Stores a trial's final weights (a storage.records.WeightsFile) in Optuna's artifact store."""

    def __init__(self, url: str, study_name: str):
        from optuna.artifacts import FileSystemArtifactStore
        self.dir = artifact_dir(url, study_name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(str(self.dir))

    def save_weights(self, trial: optuna.Trial, result) -> str:
        from optuna.artifacts import upload_artifact
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial{trial.number}-weights.pt"
            WeightsFile(spec=result.spec.to_dict(), config=result.config.to_dict(),
                        state_dict=result.model.state_dict()).save(path)
            artifact_id = upload_artifact(artifact_store=self.store, file_path=str(path),
                                          study_or_trial=trial)
        set_trial_attrs(trial, weights_artifact=artifact_id)
        return artifact_id

    def load_weights(self, trial: optuna.trial.FrozenTrial) -> WeightsFile:
        artifact_id = TrialRecord.of(trial).weights_artifact
        if not artifact_id:
            raise StudyError(f"trial {trial.number} has no stored weights")
        try:
            with self.store.open_reader(artifact_id) as f:
                return WeightsFile.load(io.BytesIO(f.read()))  # data only: a stored file never runs code
        except Exception as e:
            raise StudyError(f"cannot read weights of trial {trial.number} from {self.dir}: {type(e).__name__}") from None
