"""The run folder's logs: `metrics.csv` and TensorBoard, continued cleanly on resume."""

from __future__ import annotations

import csv
import os
import re
import time
from pathlib import Path

EVENTS = re.compile(r"events\.out\.tfevents\.(\d+)\.")  # a TensorBoard event file's name


class MetricsLogger:
    """One CSV row and one TensorBoard scalar per metric per iteration, in `out_dir`.

    Started after iteration `start` > 0 (a resumed run), it keeps the rows of metrics.csv up to
    `start` and has TensorBoard purge the events after it, so each iteration is logged once.
    """

    def __init__(self, out_dir: Path, start: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "metrics.csv"
        fields, rows = None, []
        if start and path.exists():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames
                rows = [row for row in reader if float(row["iteration"]) <= start]
        tmp = path.with_name(f".{path.name}.tmp")  # the kept rows replace the file in one rename
        with tmp.open("w", newline="") as f:
            if fields:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
        os.replace(tmp, path)
        self.file = open(path, "a", newline="")  # noqa: SIM115
        self.csv = csv.DictWriter(self.file, fieldnames=fields) if fields else None
        if start:  # TensorBoard reads event files in name order, which starts with their second:
            made = [int(m[1]) for p in (out_dir / "tb").glob("*") if (m := EVENTS.match(p.name))]
            while time.time() < max(made, default=0) + 1:  # so the new one must sort last
                time.sleep(0.05)
        self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=start + 1 if start else None)

    def log(self, metrics: dict[str, float]) -> None:
        if self.csv is None:
            self.csv = csv.DictWriter(self.file, fieldnames=list(metrics))
            self.csv.writeheader()
        self.csv.writerow(metrics)
        self.file.flush()
        step = int(metrics["iteration"])
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        self.writer.close()
