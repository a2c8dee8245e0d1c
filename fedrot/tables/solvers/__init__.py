"""Offline solvers that make the shipped tables; never imported at runtime.

Each module is run as a script to regenerate its file in ``fedrot/tables/data/``:

- ``python -m fedrot.tables.solvers.lloyd_max``: Lloyd-Max quantizers (needs scipy,
  the ``dev`` extra; seconds).
- ``python -m fedrot.tables.solvers.quic_fl``: QUIC-FL receiver tables (torch
  L-BFGS; about 20 s).
- ``python -m fedrot.tables.solvers.vq``: VQ codebooks (k-means; about 4 min).

All three are deterministic, so a run reproduces the shipped numbers.
"""

__all__: list[str] = []
