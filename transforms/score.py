"""Scoring every face crop with the frame model through RunInference."""
from __future__ import annotations

from typing import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from transforms.elements import CropKey, ExtractedMedia, FaceScore, ScoredMedia
from transforms.handler import FrameModelHandler


def explode_crops(item: ExtractedMedia) -> Iterable[tuple[CropKey, np.ndarray]]:
    for track in item.tracks:
        for position, crop in enumerate(track.crops):
            yield CropKey(item.info.uri, track.track_id, position), crop


def key_score(keyed: tuple[CropKey, PredictionResult]) -> tuple[str, tuple[int, int, FaceScore]]:
    key, result = keyed
    return key.uri, (key.track_id, key.position, result.inference)


def assemble(joined: tuple[str, dict]) -> ScoredMedia:
    uri, groups = joined
    (item,) = groups["media"]  # exactly one extraction per input
    by_track: dict[int, dict[int, FaceScore]] = {}
    for track_id, position, score in groups["scores"]:
        by_track.setdefault(track_id, {})[position] = score
    scores = []
    for track in item.tracks:
        found = by_track.get(track.track_id, {})
        scores.append(tuple(found[p] for p in sorted(found)))
    return ScoredMedia(item, tuple(scores))


class ScoreFaces(beam.PTransform):
    """``PCollection[ExtractedMedia]`` -> ``PCollection[ScoredMedia]``, one per input.

    Crops are scored in batches across inputs, keyed by ``CropKey``, then joined
    back to their input (which travels without pixels) by URI.
    """

    def __init__(self, handler: FrameModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, extracted):
        scores = (
            extracted
            | "ExplodeCrops" >> beam.FlatMap(explode_crops)
            | "RunFrameModel" >> RunInference(KeyedModelHandler(self._handler))
            | "KeyScoresByUri" >> beam.Map(key_score)
        )
        media = extracted | "DropCrops" >> beam.Map(lambda item: (item.info.uri, item.without_crops()))
        return (
            {"media": media, "scores": scores}
            | "JoinScores" >> beam.CoGroupByKey()
            | "Assemble" >> beam.Map(assemble)
        )
