"""The rotation setting of a codec, as one value: mode, chunk size, auto rule, sharing.

Every rotation-based codec (DRIVE, EDEN, QUIC-FL, VQ, Hadamard-SQ) holds one
:class:`Rotation` and delegates to it: the chunk plan of a length, the forward RHT
stack (choosing the number of layers under ``mode="auto"``), its inverse, the byte of
the parameter block that records the mode, and the header checks.

Two words are kept apart: the *mode* is the codec's setting (1, 2, 3 or ``"auto"``);
the *layers* ``k`` are the number of RHTs one payload actually used (its header field
``rotations``), fixed by the mode or chosen per input by the auto rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..chunking import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_LOG2,
    MIN_CHUNK_LOG2,
    ChunkPlan,
    plan_chunks,
)
from ..errors import PayloadError
from ..hadamard import is_power_of_two
from ..rotation import choose_rotations, rotate_, rotation_keys, unrotate, unrotate_
from . import _params

__all__ = ["MODES", "Rotation", "Rotated", "MODE_FIELD"]

#: Every rotation mode; a codec may allow fewer (VQ: 2, 3, "auto").
MODES: tuple[int | str, ...] = (1, 2, 3, "auto")
_AUTO_CODE = 0

#: The parameter-block byte recording the mode (0 for "auto", else the count).
MODE_FIELD = _params.Field(
    "rotations",
    "B",
    to_wire=lambda mode: _AUTO_CODE if mode == "auto" else int(mode),
    from_wire=lambda code: "auto" if code == _AUTO_CODE else MODES[MODES.index(code)],
)


class Rotated(NamedTuple):
    """A rotated, padded vector with its chunk plan and number of RHT layers."""

    plan: ChunkPlan
    layers: int
    y: torch.Tensor


@dataclass(frozen=True)
class Rotation:
    """How a codec rotates: a mode, a chunk size, the auto rule and sharing.

    Parameters
    ----------
    mode : int or "auto"
        Number of RHT layers, or "auto" to choose ``auto[0]`` or ``auto[1]`` layers
        per input by the moment check (:func:`fedrot.rotation.choose_rotations`).
    chunk_size : int
        Power of two in 2**5..2**30: the size of the pieces rotated on their own.
    auto : (int, int)
        The layer counts "auto" chooses between: (1, 2) for scalar quantizers,
        (2, 3) for block vector quantizers.
    shared : bool
        True when all clients of a round share one rotation (keys from the seed
        only); otherwise each client has its own.
    modes : tuple
        The modes this codec allows (validated, with the list in the message).

    Examples
    --------
    >>> r = Rotation("auto", chunk_size=1024)
    >>> r.layer_counts, r.plan(3000).num_pieces
    ((1, 2), 7)
    >>> x = torch.ones(3000)
    >>> out = r.forward(x, seed=1, client=2)
    >>> out.layers, bool(torch.allclose(r.inverse(out, seed=1, client=2), x))
    (1, True)
    """

    mode: int | str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    auto: tuple[int, int] = (1, 2)
    shared: bool = False
    modes: tuple[int | str, ...] = MODES

    def __post_init__(self) -> None:
        if isinstance(self.mode, bool) or self.mode not in self.modes:
            raise ValueError(
                f"`rotations` must be one of {list(self.modes)}. Found {self.mode!r}."
            )
        size = self.chunk_size
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not is_power_of_two(size)
            or not MIN_CHUNK_LOG2 <= size.bit_length() - 1 <= MAX_CHUNK_LOG2
        ):
            raise ValueError(
                f"`chunk_size` must be a power of two in 2**{MIN_CHUNK_LOG2}..2**"
                f"{MAX_CHUNK_LOG2}. Found {size!r} (default {DEFAULT_CHUNK_SIZE})."
            )

    # ------------------------------------------------------------------ facts
    @property
    def chunk_log2(self) -> int:
        """log2 of the chunk size, as written in the payload header."""
        return self.chunk_size.bit_length() - 1

    @property
    def layer_counts(self) -> tuple[int, ...]:
        """The numbers of RHT layers a payload of this setting may declare."""
        return self.auto if self.mode == "auto" else (int(self.mode),)

    def params(self) -> dict[str, Any]:
        """The codec keyword parameters of this setting."""
        return {"rotations": self.mode, "chunk_size": self.chunk_size}

    def plan(self, d: int) -> ChunkPlan:
        """The chunk plan of a vector of length ``d``."""
        return plan_chunks(d, self.chunk_log2)

    def keys(self, seed: int, client: int, layers: int) -> list[int]:
        """Sign-vector keys of the stack (the client's own, or the round's)."""
        return rotation_keys(seed, None if self.shared else client, layers)

    def check(self, chunk_log2: int, layers: int, *, empty_ok: bool = False) -> None:
        """Reject a payload header this setting could not have produced.

        ``empty_ok`` also accepts 0 layers (a payload with nothing to rotate: sub-bit
        EDEN keeping no coordinate).
        """
        if chunk_log2 != self.chunk_log2:
            raise PayloadError(
                f"Payload chunk size is chunk_size={1 << chunk_log2} vs "
                f"chunk_size={self.chunk_size} here. Configure the same chunk size "
                "on both sides."
            )
        if layers not in self.layer_counts and not (empty_ok and layers == 0):
            raise PayloadError(
                f"Payload declares {layers} RHT layer(s), impossible for "
                f"rotations={self.mode!r}."
            )

    # -------------------------------------------------------------- transforms
    def forward(self, v: torch.Tensor, *, seed: int, client: int) -> Rotated:
        """Chunk, zero-pad and rotate ``v`` (not modified); layers by the mode."""
        plan = self.plan(v.numel())
        xp = v.new_zeros(plan.padded)
        xp[: plan.d] = v
        return self._rotate_(plan, xp, seed, client)

    def forward_(self, v: torch.Tensor, *, seed: int, client: int) -> Rotated:
        """:meth:`forward` that may overwrite ``v`` (a private copy): it rotates in
        place when no padding is needed, which saves one vector-sized buffer."""
        plan = self.plan(v.numel())
        if plan.padded == plan.d:
            return self._rotate_(plan, v, seed, client)
        xp = v.new_zeros(plan.padded)
        xp[: plan.d] = v
        return self._rotate_(plan, xp, seed, client)

    def _rotate_(
        self, plan: ChunkPlan, xp: torch.Tensor, seed: int, client: int
    ) -> Rotated:
        if self.mode == "auto":
            layers = choose_rotations(xp, plan, low=self.auto[0], high=self.auto[1])
        else:
            layers = int(self.mode)
        rotate_(xp, plan, self.keys(seed, client, layers))
        return Rotated(plan, layers, xp)

    def inverse(self, rotated: Rotated, *, seed: int, client: int) -> torch.Tensor:
        """Undo :meth:`forward` and drop the padding; a new length-d vector."""
        keys = self.keys(seed, client, rotated.layers)
        return unrotate(rotated.y, rotated.plan, keys)[: rotated.plan.d]

    def inverse_(self, rotated: Rotated, *, seed: int, client: int) -> torch.Tensor:
        """:meth:`inverse` computed in place in ``rotated.y`` (a private buffer);
        returns its length-d prefix view."""
        unrotate_(rotated.y, rotated.plan, self.keys(seed, client, rotated.layers))
        return rotated.y[: rotated.plan.d]
