"""What one fill did and what it cost: the fill's materialization metadata and ``--format json`` output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mmfs_assets.table.restores import Restore


@dataclass
class FillReport:
    feature: str
    drop_id: str
    producer: str
    rows_in_partition: int = 0
    rows_already_current: int = 0
    rows_forced: int = 0  # current rows recomputed because the run was forced
    rows_kept_pretrained: int = 0  # rows with pretrained values a tiny-profile fill left alone
    rows_waiting_for_metadata: int = 0
    rows_computed: int = 0
    rows_errored: int = 0
    commits: int = 0
    commit_retries: int = 0
    lance_version: int | None = None
    decoder: str = ""  # "cpu" or "nvdec+cpu"; "" when nothing was decoded
    decoder_reason: str = ""
    decode_workers: int = 0
    worker_restarts: int = 0  # workers replaced after a crash or a hang (each is one row's error)
    sampling: str = ""  # the setting: "auto", "exact" or "keyframe" (each row's mode is in its producer)
    rows_sampled_keyframe: int = 0  # rows decoded at keyframes (the rest of the decoded rows: exact)
    rows_sampled_exact: int = 0
    frames_decoded: int = 0
    frames_taken: int = 0
    amplification_per_row: list[float] = field(default_factory=list, repr=False)
    rows_with_repeated_frames: int = 0  # fewer distinct frames than asked (a video with fewer frames than asked,
    # or, under "keyframe" sampling, fewer keyframes)
    nvdec_rows: int = 0
    nvdec_fallbacks: int = 0  # rows NVDEC refused, decoded by CPU workers instead
    seconds_decode: float = 0.0  # summed over decode workers
    seconds_decode_wait: float = 0.0  # time the model's thread waited for decoded frames (decoding not hidden)
    seconds_compute: float = 0.0
    seconds_postprocess_wait: float = 0.0
    seconds_write: float = 0.0  # commits (they overlap the next chunk's compute)
    seconds_commit_wait: float = 0.0  # time the model's thread waited for a commit
    seconds_total: float = 0.0
    gpu_busy_percent: float | None = None
    storage_retries: int = 0  # reads and commits retried after an I/O failure of the storage
    rows_deferred: int = 0  # not computed for reasons that are not the row's (storage, workers): left for the next run
    deferred_reasons: list[str] = field(default_factory=list)
    commit_versions: list[int] = field(default_factory=list, repr=False)  # the versions this fill's commits made
    undone_by_rollback_version: int | None = None  # a rollback that removed values this fill wrote
    engine: str = "local"  # "local" (in the step's process) or "ray" (shards on Ray actors)
    shards: int = 1  # pieces of whole fragments the partition's fill ran as (engine.shards)
    replicas: int = 1  # model replicas that ran them
    shard_retries: int = 0  # shards run again after their replica died

    @property
    def rows_written(self) -> int:
        return self.rows_computed + self.rows_errored

    @property
    def rows_per_s(self) -> float:
        return self.rows_written / self.seconds_total if self.seconds_total > 0 else 0.0

    @property
    def amplification(self) -> float | None:
        """Frames decoded per frame taken, over the run."""
        return round(self.frames_decoded / self.frames_taken, 3) if self.frames_taken else None

    @property
    def amplification_max(self) -> float | None:
        return round(max(self.amplification_per_row), 3) if self.amplification_per_row else None

    def metrics(self) -> dict[str, Any]:
        """The numbers a run reports (metadata values: plain numbers and strings)."""
        out: dict[str, object] = {
            "videos_per_s": round(self.rows_per_s, 3),
            "engine": self.engine,
            "shards": self.shards,
            "replicas": self.replicas,
            "shard_retries": self.shard_retries,
            "decoder": self.decoder,
            "decode_workers": self.decode_workers,
            "sampling": self.sampling,
            "rows_sampled_keyframe": self.rows_sampled_keyframe,
            "rows_sampled_exact": self.rows_sampled_exact,
            "frames_decoded": self.frames_decoded,
            "frames_taken": self.frames_taken,
            "decode_amplification": self.amplification,
            "decode_amplification_max_row": self.amplification_max,
            "rows_with_repeated_frames": self.rows_with_repeated_frames,
            "worker_restarts": self.worker_restarts,
            "rows_deferred": self.rows_deferred,
            "storage_retries": self.storage_retries,
            "seconds_decode": round(self.seconds_decode, 3),
            "seconds_decode_wait": round(self.seconds_decode_wait, 3),
            "seconds_compute": round(self.seconds_compute, 3),
            "seconds_write": round(self.seconds_write, 3),
            "seconds_total": round(self.seconds_total, 3),
        }
        if self.nvdec_rows or self.nvdec_fallbacks:
            out["nvdec_rows"] = self.nvdec_rows
            out["nvdec_fallbacks"] = self.nvdec_fallbacks
        if self.gpu_busy_percent is not None:
            out["gpu_busy_percent"] = self.gpu_busy_percent
        return {k: v for k, v in out.items() if v is not None and v != ""}

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("amplification_per_row")
        d.pop("commit_versions")
        return {**d, **self.metrics(), "rows_written": self.rows_written}


class FillIncomplete(RuntimeError):
    """The fill committed what it could, but some rows are not done for reasons that are not theirs (storage
    unreachable, a worker that could not start) or a rollback removed values it wrote. ``report`` says what
    happened; a plain re-run computes exactly the rows that are missing."""

    def __init__(self, message: str, report: FillReport) -> None:
        super().__init__(message)
        self.report = report


def check_complete(rep: FillReport, undone: Restore | None) -> None:
    """Raise :class:`FillIncomplete` when rows were deferred or a rollback undid this fill's commits."""
    problems = []
    if undone is not None:
        rep.undone_by_rollback_version = undone.version
        problems.append(f"a rollback (version {undone.version}, back to version {undone.target}) removed values "
                        "this fill had committed")
    if rep.rows_deferred:
        why = "; ".join(rep.deferred_reasons[:3])
        problems.append(f"{rep.rows_deferred} rows were not computed because of failures that are not the videos' "
                        f"(left as they were, not recorded as errors): {why}")
    if problems:
        raise FillIncomplete(f"{rep.feature} {rep.drop_id}: " + "; ".join(problems)
                             + f". {rep.rows_written} rows were written; run it again to compute the rest", rep)
