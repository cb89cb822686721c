"""Stale rows: values whose producer no longer matches the current code version or settings.

Every row of a column group records its producer (``<feature>:<code version>|model=...|frames=8x224|
sampling=keyframe|...``). A fill recomputes rows with another producer, but nothing runs until someone
launches it, so after a deploy that bumps a code version (or a settings change) the old values sit in
the table. This module says where, without loading a model: it compares the parts of each producer
that are known from the code and the settings alone:

- the feature's code version (``clip-v1`` -> ``clip-v2``),
- the model profile (``|profile=tiny`` marks values from the random-init test models): tiny values are
  stale once the profile is ``pretrained``; pretrained values are never stale under ``tiny``, because a
  tiny fill does not overwrite them (:func:`mmfs_assets.engine.fill.fill_feature`),
- the sampling mode (``MMFS_<F>_SAMPLING``) and the frame count (``MMFS_<F>_FRAMES``, when set); under
  ``auto`` a row may hold ``exact`` or ``keyframe`` values, but ``keyframe`` ones whose frames repeat are
  stale (:mod:`mmfs_assets.engine.sampling`: ``auto`` samples those videos ``exact``),
- for the metadata group: its code version, ``MMFS_MAX_CORRUPT_FRAMES`` and the frame limits
  (``MMFS_MAX_FRAME_SIDE``, ``MMFS_MAX_FRAME_PIXELS``, ``MMFS_MAX_ASPECT_RATIO``).

A changed model or weights is found by the next fill (it loads the model); :func:`stale_features` does
not guess at it. ``mmfs status`` prints the result, the ``staleness_sensor`` reports it in the UI as the
``<feature>_current`` asset checks, and ``MMFS_RECOMPUTE_ON_CODE_CHANGE=1`` makes the automation
recompute every partition of a feature whose code version changed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mmfs_assets.engine.sampling import AUTO
from mmfs_assets.features.spec import Feature
from mmfs_loader.contract.status import DropStatus
from mmfs_loader.decode.video import SAMPLING_MODES

if TYPE_CHECKING:
    from mmfs_assets.ingest.probe import FrameLimits

METADATA_ASSET = "video_metadata"


@dataclass(frozen=True)
class Stale:
    """``rows`` rows of ``drop_id`` hold ``feature`` values made by an out-of-date producer, for ``cause``."""

    drop_id: str
    feature: str  # the asset name
    rows: int
    cause: str

    def record(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Expectation:
    """What the producer of one asset's rows must say, as far as code and settings decide it."""

    asset: str
    group: str
    prefix: str  # "<feature>:<code version>" or "mmfs.probe:<metadata code version>"
    fields: tuple[tuple[str, str | None], ...]  # (producer field, required value; None: must be absent)
    frames: int | None = None  # the frame count a MMFS_<F>_FRAMES setting asks for


def _fields(producer: str) -> tuple[str, dict[str, str]]:
    head, *rest = producer.split("|")
    return head, dict(p.split("=", 1) for p in rest if "=" in p)


def expectations(features: Iterable[Feature], profile: str, env: Mapping[str, str],
                 max_corrupt_frames: int = 0, limits: FrameLimits | None = None) -> list[Expectation]:
    """One :class:`Expectation` per asset: the metadata group and each feature (``limits``: the probe's
    frame limits, default the settings' defaults)."""
    from mmfs_assets.ingest.describe import metadata_producer
    from mmfs_assets.ingest.probe import DEFAULT_LIMITS
    from mmfs_loader.contract import schema as S

    # the probe's producer is known exactly: "mmfs.probe:<code version>/pyav-X/ffmpeg-Y|max_corrupt_frames=N|max_frame_side=..."
    head, probe_fields = _fields(metadata_producer(max_corrupt_frames, limits or DEFAULT_LIMITS))
    probe_fields = {**DEFAULT_LIMITS.details(), **probe_fields}  # default limits are left out of producers
    out = [Expectation(METADATA_ASSET, S.METADATA.name, head, tuple(probe_fields.items()))]
    for f in features:
        frames = env.get(f.frames_env)
        fields: list[tuple[str, str | None]] = [("sampling", env.get(f.sampling_env) or f.default_sampling)]
        if f.build_tiny is not None:  # the profile only changes features that have a model
            fields.append(("profile", "tiny" if profile == "tiny" else None))
        out.append(Expectation(f.name, f.group.name, f"{f.name}:{f.code_version}", tuple(fields),
                               int(frames) if frames and frames.isdigit() else None))
    return out


def why_stale(producer: str, exp: Expectation) -> str | None:
    """Why ``producer`` is out of date for ``exp``, or None when the code and settings agree with it."""
    head, fields = _fields(producer)
    if exp.prefix.startswith("mmfs.probe:"):
        from mmfs_assets.ingest.probe import DEFAULT_LIMITS

        fields = {**DEFAULT_LIMITS.details(), **fields}  # a producer without a limit used its default
        (version, *decoder), (want_version, *want_decoder) = head.split("/"), exp.prefix.split("/")
        if version != want_version:
            return f"code version {version.split(':', 1)[-1]} -> {want_version.split(':', 1)[1]}"
        if decoder != want_decoder:  # a PyAV/FFmpeg upgrade: the next fill probes again
            return f"decoder {'/'.join(decoder) or '-'} -> {'/'.join(want_decoder)}"
    elif head != exp.prefix:
        return f"code version {head.split(':', 1)[-1]} -> {exp.prefix.split(':', 1)[1]}"
    for name, want in exp.fields:
        have = fields.get(name)
        if name == "sampling" and want == AUTO and have in SAMPLING_MODES:
            continue  # which of the two a row needs is decided per row (stale_features)
        if have != want and not (name == "profile" and want is None and have is None):
            if name == "profile":
                if have is None:  # pretrained values under MMFS_MODEL_PROFILE=tiny: kept, see mmfs_assets.engine.plan.rows_to_fill
                    continue
                return f"model profile {have} -> pretrained"
            return f"{name} {have or '-'} -> {want or '-'}"
    if exp.frames is not None:
        have_frames = fields.get("frames", "").split("x", 1)[0]
        if have_frames != str(exp.frames):
            return f"frames {have_frames or '-'} -> {exp.frames}"
    return None


def _auto(exp: Expectation) -> bool:
    return ("sampling", AUTO) in exp.fields


def stale_features(drops: list[DropStatus], exps: list[Expectation]) -> list[Stale]:
    """Every (drop, asset) with stale rows, one entry per cause, in drop then asset order."""
    out: list[Stale] = []
    for d in drops:
        for exp in exps:
            gs = d.groups.get(exp.group)
            if gs is None:
                continue
            causes: dict[str, int] = defaultdict(int)
            for producer, n in gs.producers.items():
                if (cause := why_stale(producer, exp)) is not None:
                    causes[cause] += n
                elif _auto(exp) and "|sampling=keyframe" in producer and gs.repeated.get(producer):
                    causes["sampling keyframe -> exact (too few keyframes)"] += gs.repeated[producer]
            out += [Stale(d.drop_id, exp.asset, n, cause) for cause, n in sorted(causes.items())]
    return out


def settings_expectations(settings) -> list[Expectation]:
    """:func:`expectations` for the catalog's features under ``settings`` (a :class:`~mmfs_assets.settings.Settings`)."""
    from mmfs_assets.features import discover
    from mmfs_assets.ingest.probe import FrameLimits

    return expectations(discover(), settings.model_profile, settings.feature_env, settings.max_corrupt_frames,
                        FrameLimits.of(settings))


def refused_drops(drop_dir: str | Path, storage_options: dict[str, str] | None = None) -> dict[str, str]:
    """Drops under the drop dir (folder or ``s3://`` prefix) that will never be ingested, with the reason."""
    from mmfs_assets.ingest.drop_source import drop_source
    from mmfs_assets.ingest.s3_client import error_text

    try:
        return drop_source(drop_dir, storage_options).refused()
    except OSError as e:  # an unreadable drop folder is reported as such, not as a table error
        return {str(drop_dir): f"the drop folder cannot be listed: {e.strerror or e}"}
    except Exception as e:  # noqa: BLE001 - a bucket that cannot be listed (endpoint, credentials)
        if type(e).__module__.startswith(("botocore", "boto3")):
            return {str(drop_dir): f"the drop prefix cannot be listed: {error_text(e)}"}
        raise
