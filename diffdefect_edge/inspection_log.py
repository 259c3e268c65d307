"""The inspection log: one SQLite database (WAL) that records every frame in which defects were found.

Each frame with defects is committed in its own transaction, so a process that is killed loses no row that was
committed before; WAL lets a dashboard read the database while the line writes it. Several runs share one
database: each run gets a row in ``runs`` and its inspections point to it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from diffdefect_edge.detections import Detections

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    started_at  REAL NOT NULL,
    source      TEXT NOT NULL,
    model       TEXT NOT NULL,
    backend     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inspections (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    frame_index  INTEGER NOT NULL,
    timestamp    REAL NOT NULL,
    latency_ms   REAL,
    num_defects  INTEGER NOT NULL,
    detections   TEXT NOT NULL,
    source_ref   TEXT
);
CREATE TABLE IF NOT EXISTS defects (
    id             INTEGER PRIMARY KEY,
    inspection_id  INTEGER NOT NULL REFERENCES inspections(id),
    class_name     TEXT NOT NULL,
    score          REAL NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    crop_path      TEXT
);
CREATE INDEX IF NOT EXISTS inspections_by_run ON inspections(run_id, frame_index);
CREATE INDEX IF NOT EXISTS defects_by_class ON defects(class_name);
"""


class InspectionLog:
    """Append-only log of inspected frames with defects (``with InspectionLog(path, ...) as log: ...``)."""

    def __init__(self, path: str | Path, source: str, model: str, backend: str) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise ValueError(f"--db {self.path}: is a folder, expected an SQLite file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process; fsync at checkpoints
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(inspections)")}
            if "source_ref" not in columns:  # a log written before frames carried their source
                self._db.execute("ALTER TABLE inspections ADD COLUMN source_ref TEXT")
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"--db {self.path}: not a usable SQLite database ({exc})") from None
        cur = self._db.execute("INSERT INTO runs (started_at, source, model, backend) VALUES (?, ?, ?, ?)",
                               (time.time(), source, model, backend))
        self.run_id = int(cur.lastrowid)

    def record(self, frame_index: int, timestamp: float, detections: Detections,
               crop_paths: list[str] | None = None, source_ref: dict | None = None) -> None:
        """Commit one frame's defects (frames without any are not recorded)."""
        if len(detections) == 0:
            return
        payload: dict[str, Any] = detections.to_dict()
        with self._db:  # one transaction: the inspection and its defects land together or not at all
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "INSERT INTO inspections (run_id, frame_index, timestamp, latency_ms, num_defects, detections, "
                "source_ref) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.run_id, frame_index, timestamp, detections.meta.get("latency_ms"), len(detections),
                 json.dumps(payload["detections"]), json.dumps(source_ref) if source_ref else None))
            inspection_id = cur.lastrowid
            paths = crop_paths or [None] * len(detections)
            self._db.executemany(
                "INSERT INTO defects (inspection_id, class_name, score, x1, y1, x2, y2, crop_path) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(inspection_id, name, score, *map(float, box), path)
                 for (box, score, _, name), path in zip(detections, paths)])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> InspectionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
