"""One loaded copy of a checkpoint per worker process, shared by every stage that uses it.

The frame-model handler and the aggregator both need the checkpoint. Each
worker process loads it once through Beam's ``Shared``, and both stages get
that same ``LoadedCheckpoint``: the frame model is never built twice, and the
aggregator never builds an EfficientNet just to reach the BiLSTM. The driver
never loads models; it reads only the card (``models.checkpoint.read_card``).
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

from apache_beam.utils import shared

from models.checkpoint import LoadedCheckpoint, load_checkpoint

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
_HANDLES: dict[Optional[str], shared.Shared] = {}  # per process: built on import, never pickled


def acquire_checkpoint(spec: Optional[str]) -> LoadedCheckpoint:
    """The process's copy of checkpoint ``spec``, loaded on first use (on the CPU).

    The object is shared while anyone holds it: keep a reference for as long as
    the models are used, so that a later caller gets the same copy.
    """
    with _LOCK:
        handle = _HANDLES.setdefault(spec, shared.Shared())

    def load() -> LoadedCheckpoint:
        logger.info("loading checkpoint %s in this worker process", spec)
        return load_checkpoint(spec, map_location="cpu")

    return handle.acquire(load, tag=f"checkpoint:{spec}")
