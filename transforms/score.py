"""Scoring every face crop with the frame model through RunInference."""
from __future__ import annotations

import ast
from typing import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from transforms.elements import CropKey, ExtractedMedia, FaceScore, ScoredMedia
from transforms.handler import FrameModelHandler
from transforms.media import first_line


def explode_crops(item: ExtractedMedia) -> Iterable[tuple[CropKey, np.ndarray]]:
    for track in item.tracks:
        for position, crop in enumerate(track.crops):
            yield CropKey(item.info.uri, track.track_id, position), crop


def key_score(keyed: tuple[CropKey, PredictionResult]) -> tuple[str, tuple[int, int, FaceScore]]:
    key, result = keyed
    return key.uri, (key.track_id, key.position, result.inference)


def describe_error(error) -> str:
    """One line from an exception, or from the ``(type, repr, traceback)`` Beam's dead letters hold."""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {first_line(error)}"
    if isinstance(error, tuple) and error and isinstance(error[0], type):
        name, text = error[0].__name__, str(error[1]) if len(error) > 1 else ""
        if text.startswith(f"{name}(") and text.endswith(")"):
            try:
                args = ast.literal_eval(text[len(name) : ])
                text = str(args[0] if isinstance(args, tuple) and args else args)
            except (ValueError, SyntaxError):
                pass
        return f"{name}: {first_line(ValueError(text))}"
    return first_line(ValueError(str(error)))


def failed_crops(failure: tuple) -> Iterable[tuple[str, str]]:
    """``(batch, exception)`` from RunInference's dead-letter output -> one error per input."""
    batch, error = failure
    text = f"frame model failed: {describe_error(error)}"
    for uri in sorted({key.uri for key, _ in batch}):
        yield uri, text


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
    return ScoredMedia(item, tuple(scores), tuple(sorted(set(groups["failures"]))))


class ScoreFaces(beam.PTransform):
    """``PCollection[ExtractedMedia]`` -> ``PCollection[ScoredMedia]``, one per input.

    Crops are scored in batches across inputs, keyed by ``CropKey``, then joined
    back to their input (which travels without pixels) by URI.
    """

    def __init__(self, handler: FrameModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, extracted):
        # A batch the model fails on (say, out of memory) goes to the dead-letter
        # output instead of failing the bundle; its inputs get an error row.
        results, dead_letters = (
            extracted
            | "ExplodeCrops" >> beam.FlatMap(explode_crops)
            | "RunFrameModel" >> RunInference(KeyedModelHandler(self._handler)).with_exception_handling()
        )
        scores = results | "KeyScoresByUri" >> beam.Map(key_score)
        failures = dead_letters.failed_inferences | "FailedInputs" >> beam.FlatMap(failed_crops)
        media = extracted | "DropCrops" >> beam.Map(lambda item: (item.info.uri, item.without_crops()))
        return (
            {"media": media, "scores": scores, "failures": failures}
            | "JoinScores" >> beam.CoGroupByKey()
            | "Assemble" >> beam.Map(assemble)
        )
