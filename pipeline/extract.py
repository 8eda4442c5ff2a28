"""The face-extraction job: labelled videos in, labelled face crops out.

It runs the scan job's own ``ExtractFaces`` transform (the same decoding,
detection, tracking and cropping), so a model is trained on exactly the crops
it will be shown when scanning. The crops are cut as the training config's
model section names them (``TrainModelConfig.crop``); ``train`` writes that spec
into the checkpoint's card, and scans cut crops from the card. Output, under FACES_DIR:

- ``faces/part-*.parquet``: one row per face crop (``FACE_SCHEMA``), PNG-encoded, in files of one
  row group of at most ``FACE_ROWS_PER_GROUP`` crops (training streams them a row group at a time);
- ``videos/part-*.parquet``: one row per video with its extraction status;
- ``crop.json``: how the crops were cut (policy, size, margin, box_margins; ``read_crop_spec``);
- ``config.yaml``: the effective scan configuration used for extraction.
"""
from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Sequence

import apache_beam as beam
import fsspec

from models.crops import CropSpec
from pipeline.config import ScanConfig, dump_config
from pipeline.crop_record import write_crop_spec
from pipeline.datasets import LabelledVideo
from pipeline.options import pipeline_options, with_worker_threads
from transforms.elements import MediaInput
from transforms.extract import ExtractFaces
from transforms.face_table import FACE_ROWS_PER_GROUP, FACE_SCHEMA, VIDEO_SCHEMA, FaceRowsFn, video_row
from transforms.parquet_sink import WriteParquetTable
from transforms.settings import CLIPS, SCOUT

logger = logging.getLogger(__name__)


def build_extract_pipeline(
    pipeline: beam.Pipeline, videos: Sequence[LabelledVideo], output_dir: str, config: ScanConfig, crop: CropSpec
) -> beam.PCollection:
    """Wire the extraction job, cutting crops as ``crop`` says; returns the face rows."""
    config = with_worker_threads(config, pipeline.options)
    out = output_dir.rstrip("/")
    run_id = uuid.uuid4().hex[:8]
    labelled = pipeline | "ListedVideos" >> beam.Create([dataclasses.asdict(v) for v in videos])
    by_uri = beam.pvalue.AsDict(labelled | "KeyByUri" >> beam.Map(lambda v: (v["uri"], v)))
    extracted = (
        labelled
        | "ToMediaInputs" >> beam.Map(lambda v, exts: MediaInput(v["uri"], exts.media_type(v["uri"])), config.inputs)
        | "ExtractFaces" >> ExtractFaces(config.decode, config.sampling, config.faces, crop,
                                         device=config.model.device, torch_threads=config.model.torch_threads)
    )
    faces = extracted | "FaceRows" >> beam.ParDo(FaceRowsFn(), by_uri)
    # One row group per file, of at most FACE_ROWS_PER_GROUP crops: training streams the table a row group at a time.
    faces | "WriteFaces" >> WriteParquetTable(f"{out}/faces", f"{out}/_staging-faces-{run_id}", FACE_SCHEMA,
                                              max_rows_per_file=FACE_ROWS_PER_GROUP)
    (
        extracted
        | "VideoRows" >> beam.Map(video_row, by_uri)
        | "WriteVideos" >> WriteParquetTable(f"{out}/videos", f"{out}/_staging-videos-{run_id}", VIDEO_SCHEMA)
    )
    return faces


def run_extract(
    videos: Sequence[LabelledVideo],
    output_dir: str,
    config: ScanConfig,
    crop: CropSpec,
    options=None,
    test_pipeline=None,
):
    """Extract face crops cut as ``crop`` says into ``output_dir`` (see the module docstring).

    Raises:
        ConfigError: If the scan config's ``faces.crop_size``/``faces.margin`` disagree with ``crop``.
    """
    config.faces.check_crop(crop, "the training config")
    if config.sampling.policy == SCOUT:  # scouting needs a frame model to score with; extraction has none
        logger.info("extracting with sampling.policy=clips: scout needs a trained frame model")
        config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, policy=CLIPS))
    fs, root = fsspec.core.url_to_fs(output_dir)
    fs.makedirs(root, exist_ok=True)
    out = output_dir.rstrip("/")
    dump_config(config, f"{out}/config.yaml")
    write_crop_spec(out, crop)
    logger.info("cutting %s face crops", crop.describe())
    pipeline = test_pipeline or beam.Pipeline(options=options or pipeline_options([]))
    build_extract_pipeline(pipeline, videos, output_dir, config, crop)
    result = pipeline.run()
    result.wait_until_finish()
    return result
