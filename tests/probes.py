"""Independent measurements of fixture videos with plain PyAV (not the project's probe code)."""

from __future__ import annotations

import av


def independent(path) -> dict:
    """Decode every frame and read geometry, rotation, audio and the decoded time span."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        times = [f.time for f in frames]
        return {
            "num_frames": len(frames),
            "width": frames[0].width,
            "height": frames[0].height,
            "rotation": int(frames[0].rotation) % 360,
            "span": max(times) - min(times),
            "has_audio": any(s.type == "audio" for s in c.streams),
            "pix_fmt": frames[0].format.name,
        }
