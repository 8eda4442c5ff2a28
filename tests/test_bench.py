"""``python -m bench`` end to end on a tiny archive: the real scan job, the naive baseline, the JSON.

Speed targets are never asserted here (see README, Performance): this checks
that the benchmark measures what it says, on real H.264 files.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from bench.run import compare_faces

REQUIRED = ("videos_per_min", "baseline_videos_per_min", "speedup_vs_baseline", "model_share", "peak_rss_mb",
            "extract_s_per_frame", "long_video_seconds", "short_video_seconds")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    out = work / "out.json"
    cmd = [sys.executable, "-m", "bench", "--videos", "1", "--short-seconds", "2", "--long-seconds", "6",
           "--work", str(work), "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout, work


def test_the_json_holds_every_figure_the_readme_quotes(bench_run):
    result, table, _ = bench_run
    for key in REQUIRED:
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["videos"] == 2 and result["statuses"] == {"ok": 2}
    assert set(result["stage_seconds"]) >= {"decode", "detect", "align", "score", "aggregate", "write", "extract"}
    # every sampled frame of both videos holds the one face, scored once
    assert result["frames_sampled"] == result["baseline_frames"] == result["faces_scored"] == 25 + 50
    assert result["speedup_vs_baseline"] == pytest.approx(result["videos_per_min"] / result["baseline_videos_per_min"])
    # the model's CPU seconds against the whole process tree's; its wall time against the workers'
    assert 0 < result["stage_seconds"]["score_cpu"] and 0 < result["model_share"] < 1
    assert result["cpu_s"] > result["stage_seconds"]["score_cpu"] and result["workers"] >= 1
    assert 0 < result["model_share_of_worker_time"] < result["model_share_of_stage_time"] < 1
    # extraction per frame comes from the scan with one worker (one stream, as the reference measured)
    one = result["one_worker"]
    assert one["wall_s"] > 0 and 0 < one["model_share"] < 1 and one["stage_seconds"]["extract"] > 0
    assert result["extract_s_per_frame"] == pytest.approx(
        sum(one["stage_seconds"][s] for s in ("decode", "detect", "align")) / result["frames_sampled"])
    assert result["rss_first_half_peak_mb"] > 0 and result["peak_rss_mb"] >= result["rss_second_half_peak_mb"]
    for line in ("videos per minute", "extraction s/frame", "frame model share", "peak RSS", "long / short video",
                 "boxes vs baseline", "CPU", "worker(s)", "one worker"):
        assert line in table


def test_both_pipelines_find_the_same_faces(bench_run):
    faces = bench_run[0]["faces_vs_baseline"]
    assert faces["boxes"] == 75 and faces["reference_faces_missed"] == 0
    assert 0 < faces["interpolated_boxes"] < faces["boxes"]
    assert faces["iou_mean"] >= 0.9
    # against the scan's own detection on every frame: what interpolation alone costs
    dense = bench_run[0]["faces_vs_every_frame_detection"]
    assert dense["boxes"] == 75 and dense["reference_faces_missed"] == 0 and dense["iou_mean"] >= 0.9
    assert bench_run[0]["score_abs_diff_vs_baseline_mean"] < 0.2


def test_the_baseline_is_reused_only_for_the_same_archive_and_settings(bench_run):
    _, _, work = bench_run
    assert len(list(work.glob("baseline-*.json"))) == 1
    assert sorted(p.name.split("-")[0] for p in (work / "archive").glob("*.mp4")) == ["long_6s_720p", "short_00_720p"]


def test_compare_faces_pairs_boxes_by_frame():
    rows = [{"uri": "a", "tracks": [{"frame_indices": [0, 1], "boxes": [[0, 0, 10, 10], [0, 0, 10, 10]],
                                     "interpolated": [False, True]}]}]
    baseline = {"a": {0: np.array([[0, 0, 10, 10]], np.float32), 1: np.array([[0, 0, 10, 5]], np.float32),
                      2: np.array([[50, 50, 60, 60]], np.float32)}}
    faces = compare_faces(rows, baseline)
    assert faces["boxes"] == 2 and faces["interpolated_boxes"] == 1 and faces["reference_faces_missed"] == 1
    assert faces["iou_mean"] == pytest.approx(0.75) and faces["iou_mean_interpolated"] == pytest.approx(0.5)
