"""Benchmark of the scan job against the naive pipeline (``python -m bench``).

``bench.archive`` generates the benchmark archive, ``bench.baseline`` is the
naive pipeline the published write-ups use, ``bench.measure`` runs the real
scan job and reads its stage timers, and ``bench.run`` compares the two and
writes the table and the JSON. Only the project's public APIs are used.
"""
