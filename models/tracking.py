"""Linking per-frame face detections of one clip into face tracks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from models.faces import FrameFaces


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(n, 4)`` and ``(m, 4)`` x1, y1, x2, y2 boxes: ``(n, m)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass
class Track:
    """One face followed through a clip: which detection it is in which frame."""

    frames: list[int] = field(default_factory=list)  # positions within the clip
    detections: list[int] = field(default_factory=list)  # index into that frame's faces

    def __len__(self) -> int:
        return len(self.frames)


def link_tracks(
    faces: Sequence[FrameFaces],
    *,
    iou_threshold: float = 0.3,
    max_gap: int = 2,
    min_length: int = 1,
) -> list[Track]:
    """Greedily link detections frame to frame by box overlap.

    Each detection joins the open track whose last box overlaps it most (IoU at
    least ``iou_threshold``); pairs are taken best-first so two faces never swap.
    A track that finds no match for more than ``max_gap`` frames is closed.
    Tracks shorter than ``min_length`` are dropped. Tracks are returned in order
    of first appearance, left to right.
    """
    open_tracks: list[tuple[Track, np.ndarray]] = []  # (track, last box)
    finished: list[Track] = []
    for pos, frame_faces in enumerate(faces):
        # Close tracks that have been unmatched for too long.
        still_open = []
        for track, box in open_tracks:
            if pos - track.frames[-1] > max_gap + 1:
                finished.append(track)
            else:
                still_open.append((track, box))
        open_tracks = still_open
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        if open_tracks and len(frame_faces):
            iou = box_iou(np.stack([box for _, box in open_tracks]), frame_faces.boxes)
            for t, d in zip(*np.unravel_index(np.argsort(-iou, axis=None), iou.shape)):
                if iou[t, d] < iou_threshold:
                    break
                if t in matched_tracks or d in matched_dets:
                    continue
                track, _ = open_tracks[t]
                track.frames.append(pos)
                track.detections.append(int(d))
                open_tracks[t] = (track, frame_faces.boxes[d])
                matched_tracks.add(int(t))
                matched_dets.add(int(d))
        new = [d for d in range(len(frame_faces)) if d not in matched_dets]
        for d in sorted(new, key=lambda i: frame_faces.boxes[i][0]):
            open_tracks.append((Track([pos], [d]), frame_faces.boxes[d]))
    finished.extend(track for track, _ in open_tracks)
    kept = [t for t in finished if len(t) >= min_length]
    return sorted(kept, key=lambda t: (t.frames[0], _first_x(faces, t)))


def _first_x(faces: Sequence[FrameFaces], track: Track) -> float:
    return float(faces[track.frames[0]].boxes[track.detections[0]][0])
