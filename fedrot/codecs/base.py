"""The codec interface every scheme implements, with the shared front end.

A codec turns a 1-D float vector into payload bytes and back, given the round seed
and the sender's client id. ``Codec`` handles input validation, rescaling of extreme
inputs, the wire envelope and its checks, weighted aggregation and reporting; a
scheme declares its parameter layout and rotation and supplies ``_encode``,
``_parse``, ``_decode`` and ``_body_sizes``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

import torch

from .. import wire
from ..errors import PayloadError
from . import _scaling
from ._io import (
    aggregate_weights,
    as_vector,
    check_finite,
    check_id,
    check_length,
    max_abs,
    scales_and_codes,
)
from ._params import ParamLayout
from ._rotation import Rotation
from .info import CodecInfo

__all__ = ["Codec", "CodecInfo", "Payloads"]

#: Checked payloads: each header with the sections its codec's ``_parse`` returned.
Payloads = list[tuple[wire.Header, Any]]


class Codec(ABC):
    """Base of all codecs (one level of inheritance; schemes subclass it directly).

    Subclasses set ``name``, ``codec_id``, ``layout`` and the protocol facts below
    that differ from the defaults (as class attributes, or in ``__init__`` where they
    depend on the parameters), set ``self.rotation`` if they rotate, and implement
    ``params``, ``_encode``, ``_parse``, ``_decode`` and ``_body_sizes``.
    """

    name: ClassVar[str]
    codec_id: ClassVar[int]
    #: True for codecs whose payload is codes plus float32 scales proportional to
    #: the input: ``encode`` then rescales inputs beyond ``2**±32`` by an exact power
    #: of two (see :mod:`fedrot.codecs._scaling`), and ``_encode`` gets its exponent.
    prescales: ClassVar[bool] = False
    #: True only when ``decode(encode(x))`` equals ``x`` bit for bit (as float32):
    #: a protocol fact, never inferred from an error statistic.
    lossless: ClassVar[bool] = False
    #: Whether E[decode(encode(x))] = x for every x.
    unbiased: bool = True
    #: Whether every payload for length d has exactly ``info(d).payload_bytes``.
    exact_size: bool = True
    #: Whether all clients of a round share one rotation (server inverts once).
    shared_rotation: ClassVar[bool] = False
    #: The parameter block: fields named as in ``params()`` (plus table checksums).
    layout: ClassVar[ParamLayout] = ParamLayout()
    #: The rotation setting, or None for codecs that never rotate (their payloads
    #: must declare 0 RHT layers and chunk size 0).
    rotation: Rotation | None = None

    def __init__(self, *, device: str | torch.device = "cpu") -> None:
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                "`device` must be a torch device such as 'cpu' or 'cuda'. "
                f"Found {device!r}."
            ) from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "`device` is 'cuda' but torch sees no CUDA device; use device='cpu'."
            )

    # ----------------------------------------------------------------- public API
    def encode(self, x: Any, *, seed: int, client: int) -> bytes:
        """Compress a 1-D float vector into payload bytes.

        Parameters
        ----------
        x : torch.Tensor or numpy.ndarray
            1-D floating vector of any length d >= 1, finite.
        seed : int
            Round seed shared by all clients, in 0..2**64-1.
        client : int
            Sender id (e.g. a Flower node id), in 0..2**64-1.

        Any finite float32 input is accepted, including entries near float32's
        largest value (3.4e38) and subnormals: norms and scales are computed on a
        power-of-two rescaled copy (exact), so they neither overflow nor underflow.
        Values below float32's smallest normal (1.2e-38) keep float32's subnormal
        resolution (absolute spacing 1.4e-45) through scales and the decoded output.

        Raises
        ------
        TypeError, ValueError
            For a bad input (not 1-D, empty, not floating, NaN/Inf) or id.
        ValueError
            When the payload cannot represent ``x`` (only for entries within a small
            factor of float32's largest value, or beyond float16's range for
            ``fp16``): a scale, or the estimate the decoder would compute, exceeds
            the format's range. Nothing is ever sent that its decoder rejects.
        """
        seed, client = check_id("seed", seed), check_id("client", client)
        v, amax = as_vector(x, self.device)
        exp = _scaling.exponent(amax) if self.prescales else 0
        blob = self._encode(_scaling.mul_pow2_(v, exp), seed, client, exp)
        if amax > 2.0**_scaling.SAFE_LOG2:
            self._check_decodable(blob, seed, client, amax)
        return blob

    def check(self, blob: bytes, *, d: int | None = None) -> wire.Header:
        """Validate a payload without decoding it; returns its header.

        Checks, in order: the envelope (magic, version, lengths, CRC-32), the codec
        id, the parameters, the chunk size and the number of rotations; that the
        payload holds ``d`` values when ``d`` is given; and that the body length is
        exactly what this codec's layout gives for the declared length (with the
        counts the body declares: kept, ceil-bit or outlier coordinates, each checked
        to be possible). It reads the payload once and allocates nothing of the
        declared size, so a forged header costs no more than its own bytes.
        :meth:`decode` and :meth:`aggregate` run the same checks first.

        Parameters
        ----------
        blob : bytes
            A payload made by :meth:`encode`.
        d : int, optional
            The length the caller expects (e.g. the model's parameter count).

        Returns
        -------
        wire.Header
            The payload's header (``header.d`` is the vector length).

        Raises
        ------
        PayloadError
            If any check fails; the message says which and what was found.

        Examples
        --------
        >>> import fedrot, torch
        >>> codec = fedrot.get_codec("eden", bits=2)
        >>> blob = codec.encode(torch.ones(1000), seed=1, client=2)
        >>> codec.check(blob, d=1000).d
        1000
        >>> codec.check(blob, d=999)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fedrot.errors.PayloadError: The payload holds d = 1000 values but the model ...
        """
        if d is not None:
            d = check_length(d)
        return self._checked(blob, d)[0]

    def decode(self, blob: bytes, *, seed: int, client: int) -> torch.Tensor:
        """Rebuild the vector from a payload; returns a float32 tensor of length d.

        Runs :meth:`check` first, so nothing of the declared size is allocated
        before the payload's length is known to match it. A payload decoded with
        another round seed or client id than it was encoded with cannot be detected
        (nothing random travels on the wire): the result is then a different,
        wrong vector of the same length and magnitude.

        Raises
        ------
        PayloadError
            If the payload is truncated, corrupt, of another codec, parameters or
            version, or its length does not match its header.
        """
        seed, client = check_id("seed", seed), check_id("client", client)
        header, parsed = self._checked(blob)
        out = self._decode(header, parsed, seed, client)
        check_finite(out)
        return out

    def aggregate(
        self,
        blobs: Sequence[bytes],
        *,
        seed: int,
        clients: Sequence[int],
        weights: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """Weighted mean of the clients' decoded vectors.

        Every payload passes :meth:`check` (all with the d of payload 0) before any
        is decoded. Raises :class:`PayloadError` naming the bad payload.
        """
        w = aggregate_weights(len(blobs), clients, weights)
        payloads: Payloads = []
        d: int | None = None
        for i, blob in enumerate(blobs):
            try:
                payloads.append(self._checked(blob, d))
            except PayloadError as exc:
                raise PayloadError(f"Payload {i} (client {clients[i]}): {exc}") from exc
            d = payloads[0][0].d
        out = self._aggregate(payloads, seed, [int(c) for c in clients], w)
        check_finite(out)
        return out

    def info(self, d: int) -> CodecInfo:
        """Sizes and statistical facts for vectors of length ``d``."""
        d = check_length(d)
        body, codes = self._body_sizes(d)
        total = self._envelope_bytes + body
        return CodecInfo(
            name=self.name,
            params=self.params(),
            d=d,
            payload_bytes=total,
            exact_size=self.exact_size,
            header_bytes=total - codes,
            bits_per_coordinate=8 * total / d,
            unbiased=self.unbiased,
            shared_rotation=self.shared_rotation,
            expected_vnmse=self._expected_vnmse(),
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"get_codec({self.name!r}{', ' if args else ''}{args})"

    # ------------------------------------------------------------ scheme hooks
    def params(self) -> dict[str, Any]:
        """Keyword parameters that recreate this codec with ``get_codec``.

        By default the attributes named by the ``layout`` fields; codecs with
        other parameters (a rotation, derived values) override it.
        """
        return {f.name: getattr(self, f.name) for f in self.layout.fields}

    def _param_values(self) -> dict[str, Any]:
        """Values of the ``layout`` fields: ``params()`` unless extended."""
        return self.params()

    @abstractmethod
    def _encode(self, v: torch.Tensor, seed: int, client: int, exp: int) -> bytes:
        """Payload for a validated float32 vector on ``self.device`` (a private
        copy). ``v`` is the input times ``2**exp`` (0 unless ``prescales``): every
        scale written must be divided back (:func:`_scaling.scale_bytes`)."""

    def _parse(self, header: wire.Header, reader: wire.Reader) -> Any:
        """Check the body of a payload whose envelope and parameters were checked
        against this codec's layout for ``header.d``, and return its sections (views,
        counts, small arrays) for :meth:`_decode`. Must not allocate anything of
        size ``header.d`` before the body length has been checked.

        The default layout is the common one: float32 scales, then packed codes, of
        the sizes :meth:`_body_sizes` gives (so one formula defines both); returns
        ``(scales, codes)``. Codecs with counts or other sections override it.
        """
        body, codes = self._body_sizes(header.d)
        n = (body - codes) // 4
        return scales_and_codes(reader, n, codes, "scales and codes", self.device)

    @abstractmethod
    def _decode(
        self, header: wire.Header, parsed: Any, seed: int, client: int
    ) -> torch.Tensor:
        """Vector from the sections :meth:`_parse` returned."""

    @abstractmethod
    def _body_sizes(self, d: int) -> tuple[int, int]:
        """(body bytes, bytes of packed codes/values in it) for length d: exact, or
        expected when ``exact_size`` is False."""

    def _expected_vnmse(self) -> float | None:
        return None

    def _aggregate(
        self, payloads: Payloads, seed: int, clients: list[int], weights: torch.Tensor
    ) -> torch.Tensor:
        """Weighted sum of the checked payloads' decodes (normalized weights)."""
        acc: torch.Tensor | None = None
        for (header, parsed), client, w in zip(
            payloads, clients, weights.tolist(), strict=True
        ):
            x = self._decode(header, parsed, seed, client)
            acc = x.mul_(w) if acc is None else acc.add_(x, alpha=w)
        assert acc is not None
        return acc

    # ----------------------------------------------------------------- helpers
    def _checked(self, blob: bytes, d: int | None = None) -> tuple[wire.Header, Any]:
        """:meth:`check`, returning the header and the parsed body sections."""
        header, body = wire.parse(blob)
        self._check_header(header)
        if d is not None and header.d != d:
            raise PayloadError(
                f"The payload holds d = {header.d} values but the model has {d}."
            )
        reader = wire.Reader(body)
        parsed = self._parse(header, reader)
        reader.expect_remaining(0, "the end of the payload")
        return header, parsed

    def _check_decodable(
        self, blob: bytes, seed: int, client: int, amax: float
    ) -> None:
        """Refuse (ValueError) a payload for a huge input whose decoded estimate
        would not fit in float32, instead of sending what the decoder rejects."""
        header, parsed = self._checked(blob)
        if not math.isfinite(max_abs(self._decode(header, parsed, seed, client))):
            raise ValueError(
                f"`x` is too large for {self!r}: its largest value is {amax:.3g} and "
                "the decoded estimate (the value plus this codec's error) would "
                f"exceed float32's range ({torch.finfo(torch.float32).max:.3g}). "
                "Scale the update down or use the 'fp32' codec."
            )

    @cached_property
    def _param_block(self) -> bytes:
        """This codec's parameter block (its ``layout`` applied to its values)."""
        return self.layout.pack(self._param_values())

    @cached_property
    def _envelope_bytes(self) -> int:
        """Bytes of every payload outside the body: envelope and parameters."""
        return wire.FIXED_BYTES + len(self._param_block)

    def _pack(self, *, d: int, layers: int, body: list[bytes]) -> bytes:
        """The payload: envelope, this codec's parameters, ``body``, CRC."""
        return wire.build(
            codec_id=self.codec_id,
            rotations=layers,
            chunk_log2=0 if self.rotation is None else self.rotation.chunk_log2,
            d=d,
            params=self._param_block,
            body=body,
        )

    def _check_header(self, header: wire.Header) -> None:
        if header.codec_id != self.codec_id:
            raise PayloadError(
                f"Payload was made by codec id {header.codec_id}, but this is "
                f"{self.name!r} (id {self.codec_id}). Decode with the sender's codec."
            )
        if header.params != self._param_block:
            raise PayloadError(
                "Payload parameters do not match this codec's: "
                f"{self.layout.mismatch(header.params, self._param_block)} (payload "
                f"vs {self!r}). Configure the same parameters on both sides."
            )
        self._check_layers(header)

    def _check_layers(self, header: wire.Header) -> None:
        """Chunk size and number of RHT layers against ``rotation``."""
        if self.rotation is not None:
            self.rotation.check(header.chunk_log2, header.rotations)
        elif header.rotations != 0 or header.chunk_log2 != 0:
            raise PayloadError(
                f"Payload declares {header.rotations} rotations and chunk size "
                f"2**{header.chunk_log2}; {self.name} uses neither."
            )
