"""Quantization tables shipped as data: runtime loaders apart from offline solvers.

Runtime (read ``fedrot/tables/data/*.json``; numpy and torch only):

- :mod:`fedrot.tables.lloyd_max`: Lloyd-Max quantizers for N(0, 1) (EDEN, DRIVE).
- :mod:`fedrot.tables.quic_fl`: QUIC-FL receiver tables and the sender's state sweep.
- :mod:`fedrot.tables.vq`: block VQ codebooks and the nearest-codeword search.

All three read through one helper (``fedrot/tables/_shipped.py``) that checks each
file's version and provenance and each array's shape, values and CRC.

Offline (:mod:`fedrot.tables.solvers`, run with ``python -m`` to regenerate a file;
never imported at runtime): ``python -m fedrot.tables.solvers.lloyd_max``,
``python -m fedrot.tables.solvers.quic_fl``, ``python -m fedrot.tables.solvers.vq``.
"""

__all__: list[str] = []
