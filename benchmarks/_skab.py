"""The labelled SKAB files for the detector benchmark, read by the product's ``demo.skab``.

The data are not part of this repository. The default location is ``$OPSTWIN_SKAB_DIR`` or
``../shared/datasets/skab`` relative to the repository root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo import skab

REPO_ROOT = Path(__file__).resolve().parents[1]
SENSORS = tuple(skab.METRIC_NAMES)
LABELLED_GROUPS = ("valve1", "valve2", "other")
#: SKAB convention (upstream notebooks): fit on the first 400 rows of each file.
TRAIN_ROWS = 400


@dataclass(frozen=True)
class SkabFile:
    """One labelled SKAB experiment.

    Attributes:
        name: e.g. ``"valve1/3"``.
        group: ``"valve1"``, ``"valve2"`` or ``"other"``.
        ts: ``(n,)`` ``datetime64[s]`` timestamps (testbed local time).
        X: ``(n, 8)`` float64 sensor values in ``SENSORS`` order (units in the dataset README).
        anomaly: ``(n,)`` bool labels (used only for scoring).
    """

    name: str
    group: str
    ts: np.ndarray
    X: np.ndarray
    anomaly: np.ndarray


def default_data_dir() -> Path:
    """``$OPSTWIN_SKAB_DIR`` if set, else ``<repo>/../shared/datasets/skab``."""
    return skab.default_data_dir(REPO_ROOT)


def load_skab(data_dir: str | Path | None = None) -> list[SkabFile]:
    """Load the 34 labelled SKAB files (valve1, valve2, other) in numeric order.

    Raises:
        FileNotFoundError: if ``data_dir`` holds no SKAB files.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    files = []
    for name in skab.list_files(root, list(LABELLED_GROUPS)):
        run = skab.read_run(root, name)
        files.append(SkabFile(name.removesuffix(".csv"), name.split("/")[0], run.ts, run.X,
                              run.labels))
    return files
