"""A run folder's logs: one CSV row and TensorBoard scalars per iteration, continued on resume.

Shared by classic (progress.csv, SB3's column names, x = total timesteps) and lm (metrics.csv,
trl's names, x = iteration).
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Sequence
from pathlib import Path

from ppo_bridge.atomic import atomic_file

EVENTS = re.compile(r"events\.out\.tfevents\.(\d+)\.")  # a TensorBoard event file's name


class MetricsLogger:
    """`out_dir/csv_name` and `out_dir/tb/`, one row per `log` call, indexed by `row[step_key]`.

    Nothing is written before the first row, so a run (or a resume) that fails before its first
    iteration leaves the folder as it was. A resumed run (`resume_step` given) keeps the CSV rows
    up to that step, drops later ones (they were never checkpointed: they are done again) and any
    torn row a kill left, rewrites the file atomically, and appends from there; TensorBoard purges
    the later events likewise. `columns` fixes the CSV header (else the first row's keys);
    metrics whose names start with one of `tb_skip` stay out of TensorBoard.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        csv_name: str = "metrics.csv",
        step_key: str = "iteration",
        resume_step: float | None = None,
        columns: Sequence[str] | None = None,
        tensorboard: bool = True,
        tb_skip: tuple[str, ...] = (),
    ) -> None:
        self.out_dir, self.path, self.step_key = out_dir, out_dir / csv_name, step_key
        self.resume_step, self.columns = resume_step, list(columns) if columns else None
        self.tensorboard, self.tb_skip = tensorboard, tb_skip
        self.file = self.csv = self.writer = None

    def _kept_rows(self) -> list[dict[str, str]]:
        """The rows of a resumed run's CSV up to `resume_step` (whole, well-formed rows only)."""
        if self.resume_step is None or not self.path.exists():
            return []
        kept = []
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            self.columns = self.columns or reader.fieldnames
            for row in reader:
                try:
                    step = float(row[self.step_key])
                except (TypeError, ValueError, KeyError):
                    continue
                if None not in row.values() and None not in row and step <= self.resume_step:
                    kept.append(row)
        return kept

    def _open(self, first: dict[str, float]) -> None:
        kept = self._kept_rows()
        self.columns = self.columns or list(first)
        with atomic_file(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self.file = self.path.open("a", newline="")
        self.csv = csv.DictWriter(self.file, self.columns, restval="", extrasaction="ignore")
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            tb = self.out_dir / "tb"
            purge = None
            if self.resume_step is not None:
                purge = int(self.resume_step) + 1
                # TensorBoard reads event files in name order (their creation second): the new
                # file must sort last
                made = [int(m[1]) for p in tb.glob("*") if (m := EVENTS.match(p.name))]
                while time.time() < max(made, default=0) + 1:
                    time.sleep(0.05)
            self.writer = SummaryWriter(str(tb), purge_step=purge)

    def log(self, row: dict[str, float]) -> None:
        if self.file is None:
            self._open(row)
        self.csv.writerow(row)
        self.file.flush()
        if self.writer is not None:
            step = int(row[self.step_key])
            for key, value in row.items():
                if not (self.tb_skip and key.startswith(self.tb_skip)):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics CSV as floats (empty cells: NaN)."""
    with path.open(newline="") as f:
        return [
            {k: float(v) if v != "" else float("nan") for k, v in row.items()}
            for row in csv.DictReader(f)
        ]
