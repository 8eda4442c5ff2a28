"""``python -m bench --videos N --json OUT.json``: the scan job against the naive pipeline.

Generates (or reuses) the benchmark archive, scans it with the real CLI,
scans the long video and a short one alone (their cost, by the job's own stage
timers), runs the naive baseline over the same videos, compares the faces
both found, prints a table and writes the JSON. The comparison with the
baseline samples as the baseline does (the ``clips`` policy). The long-video
line scans the long video alone with the ``scout`` policy and with ``clips``:
seconds per minute of video, the decode share and the coverage of each
(``bench.coverage``); ``--long-only`` measures that line alone.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import time
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from bench.archive import BenchVideo, build_archive
from bench.baseline import BaselineResult, NaivePipeline
from bench.coverage import long_video_figures
from bench.measure import ScanMeasurement, measure_scan
from models.device import available_cores
from models.tracking import box_iou
from pipeline.config import ScanConfig, load_config, to_dict

logger = logging.getLogger("bench")

_EXTRACT_STAGES = ("decode", "detect", "align")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=6, help="10-second videos in the archive (720p and 1080p alternate)")
    p.add_argument("--json", dest="json_path", metavar="OUT.json", help="write the results here")
    p.add_argument("--work", default="outputs/bench", help="archive cache and scan outputs (default outputs/bench)")
    p.add_argument("--long-seconds", type=float, default=600.0, help="length of the long video (0: none)")
    p.add_argument("--short-seconds", type=float, default=10.0, help="length of the short videos")
    p.add_argument("--gop-seconds", type=float, default=2.0, help="keyframe interval of the archive's videos")
    p.add_argument("--checkpoint", help="checkpoint to scan with (default: the bundled demo model)")
    p.add_argument("--config", help="scan configuration YAML (default: built-in)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="scan config override, also applied to the baseline's sampling and detection")
    p.add_argument("--no-baseline", action="store_true", help="measure the scan job only")
    p.add_argument("--no-dense", action="store_true",
                   help="skip the scan with faces.detect_every=1 (what interpolated boxes are compared with)")
    p.add_argument("--fresh-baseline", action="store_true",
                   help="run the naive baseline even when this machine has its results for this archive")
    p.add_argument("--long-only", action="store_true",
                   help="measure only the long-video line (the long video scanned with the scout and clips policies)")
    return p.parse_args(argv)


def compare_faces(rows: list[dict], baseline: dict[str, dict[int, np.ndarray]]) -> dict:
    """Box IoU of every face the scan reported against reference boxes on the same frame.

    ``baseline`` maps uri -> frame index -> boxes: the naive pipeline's, or the scan's
    own with detection on every frame. ``reference_faces_missed`` counts reference
    boxes on frames where the scan reported none.
    """
    ious, interpolated, missed = [], [], 0
    for row in rows:
        theirs = baseline.get(row["uri"])
        if theirs is None:
            continue
        ours_by_frame: dict[int, list] = {}
        for track in row["tracks"] or []:
            flags = track.get("interpolated") or [False] * len(track["frame_indices"])
            for index, box, flag in zip(track["frame_indices"], track["boxes"], flags):
                ours_by_frame.setdefault(int(index), []).append((np.asarray(box), flag))
        for index, boxes in theirs.items():
            ours = ours_by_frame.get(index, [])
            if len(boxes) and not ours:
                missed += len(boxes)
            for box, flag in ours:
                iou = float(box_iou(box[None], boxes).max()) if len(boxes) else 0.0
                ious.append(iou)
                interpolated.append(flag)
    ious_a, flags_a = np.asarray(ious), np.asarray(interpolated, bool)
    if not len(ious_a):
        return {"boxes": 0}
    return {
        "boxes": int(len(ious_a)),
        "interpolated_boxes": int(flags_a.sum()),
        "iou_mean": float(ious_a.mean()),
        "iou_p05": float(np.percentile(ious_a, 5)),
        "iou_min": float(ious_a.min()),
        "fraction_iou_at_least_0_9": float((ious_a >= 0.9).mean()),
        "iou_mean_interpolated": float(ious_a[flags_a].mean()) if flags_a.any() else None,
        "iou_mean_detected": float(ious_a[~flags_a].mean()) if (~flags_a).any() else None,
        "reference_faces_missed": int(missed),
    }


def _boxes_by_frame(rows: list[dict]) -> dict[str, dict[int, np.ndarray]]:
    """``uri -> frame index -> (k, 4)`` boxes of a scan's verdict rows."""
    out: dict[str, dict[int, list]] = {}
    for row in rows:
        frames = out.setdefault(row["uri"], {})
        for track in row["tracks"] or []:
            for index, box in zip(track["frame_indices"], track["boxes"]):
                frames.setdefault(int(index), []).append(box)
    return {uri: {i: np.asarray(b, np.float32).reshape(-1, 4) for i, b in f.items()} for uri, f in out.items()}


def _extract_per_frame(stage_seconds: dict[str, float], frames: int) -> float:
    """Decode + detect + align seconds per sampled frame."""
    return sum(stage_seconds.get(s, 0.0) for s in _EXTRACT_STAGES) / max(frames, 1)


def _video_cost(m: ScanMeasurement) -> float:
    """Seconds the job's stages spent on its inputs (no process start or model load)."""
    return sum(m.stage_seconds.get(s, 0.0) for s in ("extract", "score", "aggregate", "write"))


def _long_video_line(long: BenchVideo, work: str, stamp: str, args: argparse.Namespace,
                     clips_m: Optional[ScanMeasurement] = None) -> dict:
    """The long video scanned alone with the ``scout`` policy (and ``clips``, unless measured already)."""
    scan_args = dict(checkpoint=args.checkpoint, config=args.config)
    lines = {}
    for policy, measured in (("scout", None), ("clips", clips_m)):
        if measured is None:
            logger.info("scanning %s alone with sampling.policy=%s", long.name, policy)
            measured = measure_scan([long.uri], os.path.join(work, f"scan-{stamp}", f"long-{policy}"),
                                    overrides=list(args.overrides) + [f"sampling.policy={policy}"], **scan_args)
        (row,) = measured.rows
        lines[f"long_video_{policy}"] = long_video_figures(row, measured.stage_seconds, _video_cost(measured),
                                                           measured.cpu_s)
    return lines


def run(args: argparse.Namespace) -> dict:
    config: ScanConfig = load_config(ScanConfig, args.config, args.overrides)
    work = os.path.abspath(args.work)
    started = time.perf_counter()
    if args.long_only and args.long_seconds <= 0:
        raise SystemExit("python -m bench: --long-only needs a long video (--long-seconds > 0)")
    videos = build_archive(work, 0 if args.long_only else args.videos, short_s=args.short_seconds,
                           long_s=args.long_seconds, gop_s=args.gop_seconds)
    logger.info("archive ready (%.0f s): %d videos", time.perf_counter() - started, len(videos))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    if args.long_only:
        return {"machine": _machine(), "archive": [v.__dict__ for v in videos],
                **_long_video_line(videos[-1], work, stamp, args)}
    uris = [v.uri for v in videos]
    overrides = list(args.overrides)
    if config.sampling.policy == "scout":  # the baseline reproduces clip plans only: compare on those
        overrides.append("sampling.policy=clips")
        config = load_config(ScanConfig, args.config, overrides)
    scan_args = dict(overrides=overrides, checkpoint=args.checkpoint, config=args.config)
    logger.info("scanning the archive with the scan job")
    main = measure_scan(uris, os.path.join(work, f"scan-{stamp}", "all"), **scan_args)
    long = next((v for v in videos if v.long), None)
    short = next(v for v in videos if not v.long and (long is None or v.height == long.height))
    logger.info("scanning %s and %s alone", short.name, long.name if long else "(no long video)")
    short_m = measure_scan([short.uri], os.path.join(work, f"scan-{stamp}", "short"), **scan_args)
    long_m = measure_scan([long.uri], os.path.join(work, f"scan-{stamp}", "long"), **scan_args) if long else None

    # One worker, the machine to itself: extraction per frame measured as the reference pipeline's
    # 0.1 s was (one stream), not stretched by another worker's model sharing the cores.
    logger.info("scanning the archive again with one local worker")
    single = measure_scan(uris, os.path.join(work, f"scan-{stamp}", "one-worker"),
                          **dict(scan_args, beam_args=["--direct_num_workers=1"]))
    dense = None
    if not args.no_dense:
        logger.info("scanning the archive again, detecting on every frame (faces.detect_every=1)")
        dense = measure_scan(uris, os.path.join(work, f"scan-{stamp}", "dense"),
                             **dict(scan_args, overrides=overrides + ["faces.detect_every=1"]))
    frames = main.counters.get("frames_sampled", 0)
    stages = main.stage_seconds
    first_half, second_half = main.rss_halves_mb()
    result = {
        "machine": _machine(),
        "videos": len(videos),
        "archive": [v.__dict__ for v in videos],
        "frames_sampled": frames,
        "faces_scored": main.counters.get("faces_extracted", 0),
        "scan_wall_s": main.wall_s,
        "scan_job_s": main.job_s,
        "videos_per_min": 60.0 * len(videos) / main.wall_s,
        "videos_per_min_job": 60.0 * len(videos) / main.job_s if main.job_s else None,
        "stage_seconds": stages,
        "workers": main.workers,
        "cpu_s": main.cpu_s,
        "cpu_utilisation": main.cpu_s / (main.wall_s * available_cores()),
        # CPU seconds inside the frame model over the CPU seconds of the whole job (process tree)
        "model_share": stages.get("score_cpu", 0.0) / max(main.cpu_s, 1e-9),
        # the model's wall time over the workers' time (each worker's wall time; idle counts)
        "model_share_of_worker_time": stages.get("score", 0.0) / (main.workers * main.wall_s),
        "model_share_of_stage_time": stages.get("score", 0.0) / max(_video_cost(main), 1e-9),
        "extract_s_per_frame": _extract_per_frame(single.stage_seconds, frames),  # one worker (see above)
        "extract_s_per_frame_with_hash_and_probe": single.stage_seconds.get("extract", 0.0) / max(frames, 1),
        "extract_s_per_frame_workers": _extract_per_frame(stages, frames),
        "one_worker": {
            "wall_s": single.wall_s,
            "cpu_s": single.cpu_s,
            "videos_per_min": 60.0 * len(videos) / single.wall_s,
            "stage_seconds": single.stage_seconds,
            "model_share": single.stage_seconds.get("score_cpu", 0.0) / max(single.cpu_s, 1e-9),
            "model_share_of_wall": single.stage_seconds.get("score", 0.0) / single.wall_s,
            "peak_rss_mb": single.peak_rss_mb,
        },
        "peak_rss_mb": main.peak_rss_mb,
        "rss_first_half_peak_mb": first_half,
        "rss_second_half_peak_mb": second_half,
        "short_video": short.name,
        "short_video_seconds": _video_cost(short_m),
        "short_video_wall_s": short_m.wall_s,
        "long_video_seconds": _video_cost(long_m) if long_m else None,
        "long_video_wall_s": long_m.wall_s if long_m else None,
        "long_over_short": (_video_cost(long_m) / _video_cost(short_m)) if long_m else None,
        **(_long_video_line(long, work, stamp, args, long_m if config.sampling.policy == "clips" else None)
           if long else {}),
        "statuses": _count(r["status"] for r in main.rows),
        "faces_vs_every_frame_detection": compare_faces(main.rows, _boxes_by_frame(dense.rows)) if dense else None,
        "dense_detect_seconds": dense.stage_seconds.get("detect") if dense else None,
        "config": args.config,
        "config_overrides": overrides,
    }
    if not args.no_baseline:
        result.update(_run_baseline(videos, config, args.checkpoint, main, work, args.fresh_baseline))
        result["extract_speedup_vs_baseline_per_frame"] = (
            result["baseline_extract_s_per_frame"] / max(result["extract_s_per_frame"], 1e-9))
    return result


def _baseline_cache(work: str, videos: list[BenchVideo], config: ScanConfig, checkpoint: str) -> str:
    """Where the baseline's results for this archive, sampling, detection and model are kept."""
    from models.checkpoint import file_sha256

    what = [[v.uri for v in videos], to_dict(config.sampling), to_dict(config.faces), file_sha256(checkpoint)]
    return os.path.join(work, f"baseline-{hashlib.sha256(json.dumps(what).encode()).hexdigest()[:12]}.json")


def _run_baseline(videos: list[BenchVideo], config: ScanConfig, checkpoint: Optional[str],
                  main: ScanMeasurement, work: str, fresh: bool) -> dict:
    from pipeline.scan import default_checkpoint

    checkpoint = checkpoint or config.model.checkpoint or default_checkpoint()
    cache = _baseline_cache(work, videos, config, checkpoint)
    cached = os.path.exists(cache) and not fresh
    if cached:
        logger.info("naive baseline: reusing %s (--fresh-baseline runs it again)", cache)
        with open(cache) as f:
            saved = json.load(f)
        wall, results = saved["wall_s"], [BaselineResult.from_dict(r) for r in saved["results"]]
    else:
        started = time.perf_counter()  # like the scan's wall time, this includes loading the models
        naive = NaivePipeline(config, checkpoint)
        results = [naive.scan(v.uri) for v in tqdm(videos, desc="naive baseline", unit="video")]
        wall = time.perf_counter() - started
        with open(cache, "w") as f:
            json.dump({"wall_s": wall, "results": [r.to_dict() for r in results]}, f)
    stages: dict[str, float] = {}
    for r in results:
        for k, v in r.seconds.items():
            stages[k] = stages.get(k, 0.0) + v
    frames = sum(r.frames for r in results)
    ours = {r["uri"]: r["score"] for r in main.rows}
    diffs = [abs(ours[r.uri] - r.score) for r in results if r.score is not None and ours.get(r.uri) is not None]
    return {
        "baseline_cached": cached,
        "baseline_wall_s": wall,
        "baseline_videos_per_min": 60.0 * len(videos) / wall,
        "speedup_vs_baseline": wall / main.wall_s,  # same videos: the ratio of videos per minute
        "baseline_stage_seconds": stages,
        "baseline_frames": frames,
        "baseline_extract_s_per_frame": _extract_per_frame(stages, frames),
        "faces_vs_baseline": compare_faces(main.rows, {r.uri: r.boxes for r in results}),
        "score_abs_diff_vs_baseline_mean": float(np.mean(diffs)) if diffs else None,
    }


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": available_cores(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def format_table(r: dict) -> str:
    if "stage_seconds" not in r:  # --long-only
        return "\n".join(_long_lines(r))
    stages = ("decode", "detect", "align", "score", "aggregate", "write")
    base = r.get("baseline_stage_seconds", {})
    # Stage seconds are summed over the scan's workers: their total is workers x wall time.
    capacity = r["scan_wall_s"] * r.get("workers", 1)
    lines = [f"stage seconds summed over {r.get('workers', 1)} worker(s); share of workers x wall time",
             f"{'stage':<12}{'scan s':>10}{'share':>8}{'baseline s':>12}"]
    for s in stages:
        ours = r["stage_seconds"].get(s, 0.0)
        lines.append(f"{s:<12}{ours:>10.1f}{ours / capacity:>8.0%}{base.get(s, float('nan')):>12.1f}")
    other = capacity - sum(r["stage_seconds"].get(s, 0.0) for s in stages)
    lines.append(f"{'other':<12}{other:>10.1f}{other / capacity:>8.0%}{'':>12}")
    lines.append(f"{'total':<12}{capacity:>10.1f}{1:>8.0%}{r.get('baseline_wall_s', float('nan')):>12.1f}")
    lines.append(f"wall time              {r['scan_wall_s']:.1f} s; CPU {r.get('cpu_s', float('nan')):.1f} s "
                 f"({r.get('cpu_utilisation', float('nan')):.0%} of the machine's cores)")
    lines.append("")
    lines.append(f"videos per minute      {r['videos_per_min']:.2f} (baseline {r.get('baseline_videos_per_min', float('nan')):.2f},"
                 f" speed-up {r.get('speedup_vs_baseline', float('nan')):.1f}x)")
    lines.append(f"extraction s/frame     {r['extract_s_per_frame']:.4f} with one worker "
                 f"(baseline {r.get('baseline_extract_s_per_frame', float('nan')):.4f}); "
                 f"{r['extract_s_per_frame_workers']:.4f} per worker beside the other's model")
    one = r.get("one_worker")
    if one:
        lines.append(f"one worker             {one['wall_s']:.1f} s wall, {one['cpu_s']:.1f} s CPU, "
                     f"{one['videos_per_min']:.2f} videos/min; model {one['model_share']:.0%} of CPU, "
                     f"{one['model_share_of_wall']:.0%} of wall")
    lines.append(f"frame model share      {r['model_share']:.0%} of the job's CPU time; "
                 f"{r['model_share_of_worker_time']:.0%} of its workers' time, "
                 f"{r['model_share_of_stage_time']:.0%} of its stage time")
    lines.append(f"peak RSS               {r['peak_rss_mb']:.0f} MB (first half {r['rss_first_half_peak_mb']:.0f}, "
                 f"second half {r['rss_second_half_peak_mb']:.0f})")
    if r.get("long_video_seconds") is not None:
        lines.append(f"long / short video     {r['long_video_seconds']:.1f} s / {r['short_video_seconds']:.1f} s "
                     f"= {r['long_over_short']:.2f}x")
    lines += _long_lines(r)
    dense = r.get("faces_vs_every_frame_detection")
    if dense and dense.get("boxes"):
        lines.append(f"boxes vs every-frame   IoU mean {dense['iou_mean']:.3f}, 5th pct {dense['iou_p05']:.3f}, "
                     f"{dense['fraction_iou_at_least_0_9']:.0%} >= 0.9 (the scan itself with faces.detect_every=1; "
                     f"its detect stage took {r['dense_detect_seconds']:.0f} s)")
    faces = r.get("faces_vs_baseline")
    if faces and faces.get("boxes"):
        lines.append(f"boxes vs baseline      IoU mean {faces['iou_mean']:.3f}, 5th pct {faces['iou_p05']:.3f}, "
                     f"{faces['fraction_iou_at_least_0_9']:.0%} >= 0.9 ({faces['interpolated_boxes']} of "
                     f"{faces['boxes']} interpolated), baseline faces missed {faces['reference_faces_missed']}")
    return "\n".join(lines)


def _long_lines(r: dict) -> list[str]:
    """The long-video line of each sampling policy measured."""
    lines = []
    for policy in ("scout", "clips"):
        line = r.get(f"long_video_{policy}")
        if line:
            lines.append(f"long video, {policy:<6} {line['seconds_per_minute']:.2f} s per minute of video "
                         f"({line['duration_s']:.0f} s in {line['seconds']:.1f} s), decode {line['decode_share']:.0%}, "
                         f"detect {line['detect_share']:.0%}; "
                         f"coverage {line['coverage']:.1%}, largest gap {line['largest_gap_s']:.1f} s, "
                         f"{line['frames_sampled']} frames ({line['scout_frames']} scout)")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    result = run(args)
    print(format_table(result))
    if args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=2)
        logger.info("wrote %s", args.json_path)
