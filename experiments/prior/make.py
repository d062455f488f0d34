"""Write search/prior.json: the service's prior, one entry per shipped model (models/*.pt2): its
design and recipe as a complete point (every dimension, the fixed ones included, the recipe as the
file trained it), where it came from and what it verified. `find` and `search` enqueue these,
scaled to a new study's budget (search/prior.py). Rerun after shipping a model:

    .venv/bin/python experiments/prior/make.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402

from space.hold import last_k_minimum  # noqa: E402
from space.recipe import TrainConfig  # noqa: E402
from space.searchspace import RECIPE_FIELDS, SearchSpace  # noqa: E402


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    entries = []
    for path in sorted((ROOT / "models").glob("*.pt2")):
        extra = {"mnist_nas.json": ""}
        torch.export.load(str(path), extra_files=extra)  # the metadata only; nothing in it runs
        meta = json.loads(extra["mnist_nas.json"])
        url = f"sqlite:///{ROOT / 'results' / (meta['study'] + '.db')}"
        study = optuna.load_study(study_name=meta["study"], storage=url)
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == meta["trial"])
        point, problems = SearchSpace.from_dict(study.user_attrs["space"]).complete(trial.params)
        assert not problems, (path, problems)
        # the recipe as the file trained it (a stored space may leave a setting to TrainConfig's default)
        # (a file older than a setting trained with TrainConfig's default for it)
        recipe = {**TrainConfig().to_dict(), **meta["config"]}
        point.update({k: v for k, v in recipe.items() if k in RECIPE_FIELDS})
        v = meta["verify"]
        entries.append({"name": path.stem, "params": meta["params"], "study": meta["study"], "trial": meta["trial"],
                        "target": v["target"],
                        "minima": [last_k_minimum(a, v["k"]) for _, a in sorted(v["results"].items())],
                        "point": dict(sorted(point.items()))})
    out = ROOT / "search" / "prior.json"
    out.write_text(json.dumps(entries, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}: {', '.join(e['name'] for e in entries)}")


if __name__ == "__main__":
    main()
