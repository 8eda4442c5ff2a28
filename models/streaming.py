"""Batches streamed from a table read one unit (a Parquet row group) at a time: sharded, shuffled, resumable.

A :class:`StreamSource` says how many units there are, how many records each
holds, how to read one (``(row, payload)`` pairs, payloads still encoded) and
how to turn records into a batch (decoding, augmenting). :class:`ShuffledStream`
is the ``IterableDataset`` over it that a ``DataLoader`` runs:

- the epoch's unit order is a permutation seeded by ``(seed, epoch)`` (or the
  table's order when ``shuffle`` is off);
- the units are dealt out to ``world x workers`` streams, one per DataLoader
  worker of each rank: stream ``rank * workers + worker`` takes every
  ``world * workers``-th unit, so the shards are disjoint and together complete;
- each stream passes its records through a shuffle buffer of ``buffer_size``
  records, drawing with its own seeded generator, and yields batches of
  ``batch_size``. What a stream holds is bounded by the buffer, the unit being
  read and the next batch (made ahead, to mark a stream's last batch);
- every batch carries the position of its stream after it (``batch.position``):
  which unit, how many of its records, the buffer's contents as ``(unit, row)``
  references and the generator's state. :class:`StreamTracker` keeps the
  positions of the batches a training loop has consumed; a stream started from
  them continues where the consumed batches stopped, in the same order.

A ``DataLoader`` takes batches from its workers in turn, skipping those that
have ended; a resumed loader starts with the stream after the last one consumed
(``rotation``), so the interleaving continues too. Resuming needs the same
numbers of ranks and workers; :func:`resume_streams` says when it cannot.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

logger = logging.getLogger(__name__)

Record = tuple[int, Any]  # (row within its unit, payload)
Item = tuple[int, int, Any]  # (unit, row, payload)


class StreamSource(Protocol):
    """What :class:`ShuffledStream` needs of a table: units, their records, and batches of records."""

    num_units: int

    def count(self, unit: int) -> int:
        """How many records ``read(unit)`` returns (0: the unit is skipped unread)."""

    def read(self, unit: int) -> list[Record]:
        """The unit's records, ``(row, payload)`` in row order."""

    def batch(self, items: list[Item]) -> Any:
        """A batch of ``(unit, row, payload)`` items; it must accept a ``position`` attribute."""


class ShuffledStream(IterableDataset):
    """Batches of a :class:`StreamSource`, sharded over ranks and DataLoader workers (module docstring).

    Args:
        source: The table.
        batch_size: Records per batch; each stream's last batch may be smaller.
        seed, epoch: The unit order and every stream's generator derive from these.
        shuffle: Permute the units and pass records through the shuffle buffer;
            off, each stream yields its units' records in table order.
        buffer_size: Records a stream holds to shuffle (per stream).
        rank, world: This process's place among the data-parallel ranks.
        positions: Per local stream (this rank's worker index), where to continue
            (a ``batch.position``), or None to start; see :func:`resume_streams`.
        rotation: Which local stream the first worker runs (resumed loaders).
    """

    def __init__(self, source: StreamSource, *, batch_size: int, seed: int, epoch: int = 0, shuffle: bool = True,
                 buffer_size: int = 1024, rank: int = 0, world: int = 1,
                 positions: Optional[Sequence[Optional[dict]]] = None, rotation: int = 0):
        super().__init__()
        if batch_size <= 0 or buffer_size <= 0:
            raise ValueError(f"batch_size and buffer_size must be positive, got {batch_size}, {buffer_size}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.source = source
        self.batch_size = batch_size
        self.seed, self.epoch = seed, epoch
        self.shuffle = shuffle
        self.buffer_size = buffer_size
        self.rank, self.world = rank, world
        self.positions = list(positions) if positions is not None else None
        self.rotation = rotation

    def unit_order(self) -> np.ndarray:
        """The epoch's units that hold records, in the order they are dealt out."""
        units = np.array([u for u in range(self.source.num_units) if self.source.count(u) > 0], np.int64)
        if self.shuffle:
            units = units[np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(units))]
        return units

    def shard(self, stream: int, streams: int) -> np.ndarray:
        """The units of global stream ``stream`` of ``streams``."""
        return self.unit_order()[stream::streams]

    def batches_per_rank(self, workers: int) -> list[int]:
        """How many batches each rank's loader yields with ``workers`` workers (from record counts)."""
        streams = self.world * max(workers, 1)
        order = self.unit_order()
        per_stream = [sum(self.source.count(int(u)) for u in order[s::streams]) for s in range(streams)]
        batches = [math.ceil(n / self.batch_size) for n in per_stream]
        width = max(workers, 1)
        return [sum(batches[r * width:(r + 1) * width]) for r in range(self.world)]

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        local = (worker + self.rotation) % workers
        if self.positions is not None and len(self.positions) != workers:
            raise ValueError(f"positions for {len(self.positions)} workers, but the loader runs {workers}")
        start = self.positions[local] if self.positions is not None else None
        stream = self.rank * workers + local
        units = self.shard(stream, self.world * workers)
        return _look_ahead(self._batches(units, stream, local, start))

    def _batches(self, units: np.ndarray, stream: int, local: int, start: Optional[dict]) -> Iterator[Any]:
        if start is not None and start["last"]:
            return
        rng = np.random.default_rng([self.seed, self.epoch, 2, stream])
        buffer: list[Item] = []
        index, offset, batches = 0, 0, 0
        if start is not None:
            if (start["epoch"], start["stream"]) != (self.epoch, stream):
                raise ValueError(f"a position of epoch {start['epoch']} stream {start['stream']} cannot continue "
                                 f"epoch {self.epoch} stream {stream}")
            rng.bit_generator.state = start["rng"]
            buffer = self._restore(start["buffer"])
            index, offset, batches = start["unit"], start["offset"], start["batches"]
        pending: list[Item] = []

        def emit():
            nonlocal batches
            batches += 1
            batch = self.source.batch(pending)
            at, skip = (index, offset) if index >= len(units) or offset < len(records) else (index + 1, 0)
            refs = torch.tensor([(u, r) for u, r, _ in buffer], dtype=torch.int64).reshape(-1, 2)
            batch.position = {"epoch": self.epoch, "stream": stream, "local": local, "unit": at, "offset": skip,
                              "buffer": refs, "rng": rng.bit_generator.state, "batches": batches, "last": False}
            return batch

        records: list[Record] = []
        while index < len(units):
            unit = int(units[index])
            records = self.source.read(unit)
            while offset < len(records):
                row, payload = records[offset]
                offset += 1
                item = (unit, row, payload)
                if not self.shuffle:
                    pending.append(item)
                elif len(buffer) < self.buffer_size:
                    buffer.append(item)
                    continue
                else:
                    k = int(rng.integers(len(buffer)))
                    pending.append(buffer[k])
                    buffer[k] = item
                if len(pending) == self.batch_size:
                    yield emit()
                    pending = []
            index, offset = index + 1, 0
        records = []
        while buffer:  # drain in random order: swap the drawn record with the last, so the state stays a list
            k = int(rng.integers(len(buffer)))
            pending.append(buffer[k])
            buffer[k] = buffer[-1]
            buffer.pop()
            if len(pending) == self.batch_size:
                yield emit()
                pending = []
        if pending:
            yield emit()

    def _restore(self, refs: torch.Tensor) -> list[Item]:
        """The buffer's records from their ``(unit, row)`` references, re-read unit by unit."""
        pairs = [(int(u), int(r)) for u, r in refs.tolist()]
        payloads: dict[tuple[int, int], Any] = {}
        for unit in sorted({u for u, _ in pairs}):
            payloads.update({(unit, row): payload for row, payload in self.source.read(unit)})
        return [(u, r, payloads[(u, r)]) for u, r in pairs]


def _look_ahead(batches: Iterator[Any]) -> Iterator[Any]:
    """Mark each stream's final batch (``position["last"]``): a resumed loader must know it ended."""
    current = next(batches, None)
    while current is not None:
        following = next(batches, None)
        current.position["last"] = following is None
        yield current
        current = following


class StreamTracker:
    """The consumed part of one rank's loader: the position of each local stream, and the last one read."""

    def __init__(self, workers: int, state: Optional[dict] = None):
        self.workers = max(workers, 1)
        self.positions: list[Optional[dict]] = [None] * self.workers
        self.last: Optional[int] = None
        self.steps = 0
        if state is not None:
            self.positions, self.last, self.steps = list(state["positions"]), state["last"], state["steps"]

    def update(self, batch: Any) -> None:
        """Record a batch the loop consumed."""
        position = batch.position
        self.positions[position["local"]] = position
        self.last = position["local"]
        self.steps += 1

    def state(self) -> dict:
        return {"workers": self.workers, "positions": list(self.positions), "last": self.last, "steps": self.steps}


def resume_streams(state: Optional[dict], workers: int) -> tuple[Optional[list[Optional[dict]]], int]:
    """``(positions, rotation)`` for a :class:`ShuffledStream` continuing a tracker's ``state``.

    Raises:
        ValueError: If the state was taken with another number of workers.
    """
    if state is None:
        return None, 0
    if state["workers"] != max(workers, 1):
        raise ValueError(f"the data position was saved with {state['workers']} loader worker(s), not {workers}")
    rotation = 0 if state["last"] is None else (state["last"] + 1) % state["workers"]
    return list(state["positions"]), rotation
