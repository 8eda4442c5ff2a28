"""How much of a video a scan looked at, from its verdict row alone.

A frame looked at vouches for the video around it, up to ``reach_s`` either
side (1 s: half the ``scout`` policy's default spacing). *Coverage* is the
share of the duration within that reach of a frame the scan detected faces on
(scout frames and every frame of every dense clip); the *largest gap* is the
longest stretch between two such frames (or between one and the video's start
or end). A manipulated stretch longer than the largest gap cannot go unseen.
"""
from __future__ import annotations

from typing import Sequence


def looked_at(row: dict) -> list[float]:
    """Times (s) of the frames a verdict row says were looked at: scout frames and dense-clip frames."""
    times = [float(t["timestamp"]) for t in row.get("timeline") or []]
    fps = float(row.get("fps") or 0.0)
    for clip in row.get("clips") or []:
        start, end = float(clip["start_s"]), float(clip["end_s"])
        step = 1.0 / fps if fps > 0 else max(end - start, 1e-6)
        times += [start + k * step for k in range(max(int(round((end - start) * fps)), 1))]
    return sorted(times)


def coverage(times: Sequence[float], duration_s: float, reach_s: float = 1.0) -> float:
    """Share of ``[0, duration_s]`` within ``reach_s`` of one of ``times``."""
    if duration_s <= 0:
        return 0.0
    covered, end = 0.0, 0.0
    for t in sorted(times):
        low, high = max(t - reach_s, end, 0.0), min(t + reach_s, duration_s)
        if high > low:
            covered += high - low
        end = max(end, high)
    return covered / duration_s


def largest_gap(times: Sequence[float], duration_s: float) -> float:
    """The longest stretch of ``[0, duration_s]`` holding none of ``times``."""
    edges = [0.0] + sorted(min(max(t, 0.0), duration_s) for t in times) + [duration_s]
    return max(b - a for a, b in zip(edges, edges[1:]))


def long_video_figures(row: dict, stage_seconds: dict[str, float], cost_s: float, cpu_s: float = 0.0,
                       reach_s: float = 1.0) -> dict:
    """The benchmark's long-video line from a scan of that video alone.

    Args:
        row: The video's verdict row.
        stage_seconds: The scan's stage timers (``run.json``).
        cost_s: Seconds the scan's stages spent on the video (no process start or model load).
        cpu_s: CPU seconds of the whole scan (its process and decoder children, start-up included).
    """
    duration = float(row["duration_s"] or 0.0)
    times = looked_at(row)
    minutes = duration / 60.0 if duration else float("nan")
    return {
        "policy": row.get("sampling_policy"),
        "duration_s": duration,
        "seconds": cost_s,
        "seconds_per_minute": cost_s / minutes,
        "cpu_s": cpu_s,
        "detect_share": stage_seconds.get("detect", 0.0) / max(cost_s, 1e-9),
        "decode_seconds": stage_seconds.get("decode", 0.0),
        "decode_share": stage_seconds.get("decode", 0.0) / max(cost_s, 1e-9),
        "scout_score_seconds": stage_seconds.get("scout_score", 0.0),
        "frames_sampled": row["frames_sampled"],
        "scout_frames": len(row.get("timeline") or []),
        "coverage": coverage(times, duration, reach_s),
        "coverage_reach_s": reach_s,
        "largest_gap_s": largest_gap(times, duration),
        "status": row["status"],
        "label": row["label"],
        "segments": row.get("segments") or [],
    }
