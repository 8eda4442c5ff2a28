"""The face table's and the video table's columns, and the face table's row groups (no Beam here).

``deepfake-scan extract`` writes these tables (``transforms.face_table``); training
and benchmarks read and build them without loading Beam.
"""
from __future__ import annotations

import pyarrow as pa

# Crops per Parquet row group (and file) of the face table: training reads the table one row group at a
# time, so this bounds what a loader worker reads at once (~20 MB of 224 px PNG crops, ~60 MB at 380 px).
FACE_ROWS_PER_GROUP = 256

FACE_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("group", pa.string()),
        ("split", pa.string()),
        ("label", pa.string()),
        ("manipulation", pa.string()),
        ("track_id", pa.int32()),
        ("clip_index", pa.int32()),
        ("frame_index", pa.int32()),
        ("timestamp", pa.float64()),
        ("box", pa.list_(pa.float32(), 4)),
        ("crop_png", pa.binary()),  # lossless: re-compression would be a manipulation cue of its own
        ("crop_size", pa.int32()),
    ]
)

VIDEO_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("split", pa.string()),
        ("label", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("num_tracks", pa.int32()),
        ("faces", pa.int32()),
    ]
)
