"""Detecting faces on a few frames of a clip and interpolating between them.

Within a 25-frame clip (one second of video) faces move little, and MTCNN is
the costliest step of extraction. So detection runs on every ``every``-th
frame (and the last one). Between two detected frames the boxes and landmarks
of each face are interpolated linearly when the two detections agree: the same
number of faces, each matched one to one with box IoU of at least ``min_iou``.
Where they do not (a face appears, leaves, or moves fast), the gap is bisected:
its middle frame is detected, and each half is judged the same way.
Interpolated frames are flagged, and the verdict's evidence says which boxes
MTCNN saw and which were filled in.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from models.faces import FrameFaces
from models.tracking import box_iou


def keyframe_positions(length: int, every: int) -> list[int]:
    """Positions detected first: ``0, every, 2*every, ...`` and always the last frame."""
    if length <= 0:
        return []
    if every <= 1:
        return list(range(length))
    positions = list(range(0, length, every))
    if positions[-1] != length - 1:
        positions.append(length - 1)
    return positions


def match_faces(a: FrameFaces, b: FrameFaces, min_iou: float) -> Optional[list[int]]:
    """For each face of ``a``, its partner in ``b``; ``None`` unless all pair up one to one.

    Pairs are taken best-first by IoU, so two faces near each other never swap.
    """
    if len(a) != len(b):
        return None
    if len(a) == 0:
        return []
    iou = box_iou(a.boxes, b.boxes)
    partner = [-1] * len(a)
    used: set[int] = set()
    for i, j in zip(*np.unravel_index(np.argsort(-iou, axis=None), iou.shape)):
        if iou[i, j] < min_iou:
            break
        if partner[i] >= 0 or j in used:
            continue
        partner[i] = int(j)
        used.add(int(j))
    return partner if all(p >= 0 for p in partner) else None


def interpolate(a: FrameFaces, b: FrameFaces, partner: Sequence[int], t: float) -> FrameFaces:
    """Faces a fraction ``t`` of the way from ``a`` to their partners in ``b``.

    The confidence is the lower of the two detections'.
    """
    if not len(a):
        return FrameFaces(a.boxes, a.scores, a.landmarks, interpolated=True)
    order = np.asarray(partner)
    boxes = (1 - t) * a.boxes + t * b.boxes[order]
    landmarks = (1 - t) * a.landmarks + t * b.landmarks[order]
    scores = np.minimum(a.scores, b.scores[order])
    return FrameFaces(boxes.astype(np.float32), scores.astype(np.float32), landmarks.astype(np.float32),
                      interpolated=True)


def undecided_positions(found: dict[int, FrameFaces], min_iou: float) -> list[int]:
    """Midpoints of the gaps between consecutive detected frames whose detections disagree.

    Detecting them and asking again bisects each such gap until its ends agree
    or nothing lies between them: a face that moves fast costs a few more
    detections around where it moves, not the whole clip.
    """
    todo = []
    detected = sorted(found)
    for left, right in zip(detected, detected[1:]):
        if right - left > 1 and match_faces(found[left], found[right], min_iou) is None:
            todo.append((left + right) // 2)
    return todo


def fill_between(found: dict[int, FrameFaces], length: int, min_iou: float) -> list[FrameFaces]:
    """One ``FrameFaces`` per position: detected where ``found`` has it, else interpolated.

    Every gap must lie between two detections that agree (see ``undecided_positions``).
    """
    detected = sorted(found)
    if not detected or detected[0] != 0 or detected[-1] != length - 1:
        raise ValueError("the first and last positions must be detected")
    faces: list[FrameFaces] = [found[detected[0]]]
    for left, right in zip(detected, detected[1:]):
        partner = match_faces(found[left], found[right], min_iou) if right - left > 1 else []
        if partner is None:
            raise ValueError(f"positions {left} and {right} disagree; detect the frames between them")
        for pos in range(left + 1, right):
            faces.append(interpolate(found[left], found[right], partner, (pos - left) / (right - left)))
        faces.append(found[right])
    return faces
