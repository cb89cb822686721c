"""Filling the metadata column group for one drop's rows, reading each video from the table.

The metadata group is a feature whose input is the container rather than frames: the fill engine
(:mod:`mmfs_assets.engine.fill`) runs :func:`mmfs_assets.ingest.probe.probe_video` in its worker
processes. Only rows whose ``metadata_producer`` is not the current producer are probed, so a re-run
after a crash (or a re-materialization) redoes only what is missing; every chunk of whole fragments is
one column-only commit (see :mod:`mmfs_assets.table.replace`).
"""

from __future__ import annotations

from collections.abc import Callable

import av

from mmfs_assets.engine.fill import DECODE_TIMEOUT_S, fill_feature
from mmfs_assets.engine.report import FillReport
from mmfs_assets.features.spec import Feature, FrameRequest, LoadedModel, ModelContext
from mmfs_assets.ingest.probe import DEFAULT_LIMITS, FrameLimits
from mmfs_loader.contract import schema as S
from mmfs_loader.contract.table import TableRef

# v2: corrupt_frames, lost_frames, damage quarantine; v3: keyframe_times (and the frame limits, FrameLimits, whose
# defaults are not in the producer: tables probed before them stay current; a changed limit re-probes)
METADATA_CODE_VERSION = "metadata-v3"


def metadata_producer(max_corrupt_frames: int = 0, limits: FrameLimits = DEFAULT_LIMITS) -> str:
    """Who made the metadata values: the probe's code version, the exact decoder build, the damage threshold
    and the frame limits that differ from the defaults (``...|max_corrupt_frames=0|max_aspect_ratio=20``).

    Default limits are left out so that every table probed before the limits existed stays current (re-probing
    decodes every video in full); videos beyond the limits in such tables still cost at most 16x a model's
    nominal input (``mmfs_loader.decode.video.MAX_SCALED_ASPECT``), and a forced metadata backfill quarantines them."""
    default = DEFAULT_LIMITS.details()
    fields = "".join(f"|{k}={v}" for k, v in limits.details().items() if default[k] != v)
    return (f"mmfs.probe:{METADATA_CODE_VERSION}/pyav-{av.__version__}/ffmpeg-{av.ffmpeg_version_info}"
            f"|max_corrupt_frames={max_corrupt_frames}{fields}")


def _load_probe(ctx: ModelContext) -> LoadedModel:
    """The metadata group's ``Feature.load`` (a module-level function, so the Feature pickles): the probe with
    the default damage threshold and frame limits; :func:`describe_partition` passes its own to :func:`probe_model`."""
    return probe_model()


def _no_values(clips: list) -> dict:
    return {}  # never called: the probe's values come from the workers (input="container")


METADATA_FEATURE = Feature(
    name="video_metadata",
    group=S.METADATA,
    code_version=METADATA_CODE_VERSION,
    setting="MMFS_METADATA",
    default_model="pyav-probe",
    load=_load_probe,
    description="Width, height, fps, duration, frames, codec, keyframe times... of each video, from a full decode.",
    uses_gpu=False,
)


def probe_model(max_corrupt_frames: int = 0, limits: FrameLimits = DEFAULT_LIMITS) -> LoadedModel:
    """The metadata "model": the engine runs the probe in its workers on each row's container."""
    if max_corrupt_frames < 0:
        raise ValueError(f"max_corrupt_frames must be >= 0, not {max_corrupt_frames}")
    return LoadedModel(
        model="pyav-probe",
        weights="none",
        frames=FrameRequest(0),
        batch_size=1,
        compute=_no_values,
        details={"max_corrupt_frames": str(max_corrupt_frames), **limits.details()},
        input="container",
        producer=metadata_producer(max_corrupt_frames, limits),
    )


def describe_partition(
    table: TableRef | str,
    drop_id: str,
    *,
    properties: dict[str, str],
    chunk_rows: int = 256,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_corrupt_frames: int = 0,
    limits: FrameLimits | None = None,
    timeout: float | None = DECODE_TIMEOUT_S,
    force: bool = False,
) -> FillReport:
    """Probe the partition's rows that lack current metadata and write the metadata group (one engine
    with the feature fills: worker processes, chunked column-only commits, a crash or hang per row).

    A video with more than ``max_corrupt_frames`` concealed/corrupt frames or lost packets is quarantined,
    and so is one whose frames are beyond ``limits`` (default: the settings' defaults, :class:`FrameLimits`).
    ``force``: probe every row of the partition again.
    """
    return fill_feature(
        table, drop_id, METADATA_FEATURE, probe_model(max_corrupt_frames, limits or DEFAULT_LIMITS), properties=properties,
        chunk_rows=chunk_rows, decode_workers=workers, progress=progress,
        decode_timeout=timeout, force=force,
    )
