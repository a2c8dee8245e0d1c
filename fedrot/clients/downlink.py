"""The client's side of compressed broadcasts: rebuild the model before the ClientApp.

Steps for an instruction that carries a :data:`~fedrot.constants.DOWNLINK_RECORD`
(train or evaluate):

1. Read the codec, mode, run seed, version, base version, checksum and layout.
2. Rebuild the float32 model vector ``m_v``: model mode decodes the version's
   payload; delta mode decodes the full model, or adds the corrections after
   ``base`` to the model this node holds in ``context.state`` (which must be
   version ``base`` of the same run, codec and layout), or to the zero model when
   ``base`` is -1 (a node without state catching up from version 0).
3. Check the CRC-32 of ``m_v`` against the server's (bit-for-bit agreement), store
   it (delta mode), and hand the ClientApp a plain ArrayRecord in the original key
   order and dtypes, without the downlink ConfigRecord.

Any failure raises :class:`DownlinkError`; the mod turns it into an error reply
whose reason starts with ``MOD_ERROR_PREFIX + DOWNLINK_ERROR``, so the server sends
that node the full model next time.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

import fedrot

from ..broadcast import MODES, apply_corrections, checksum, decode_model
from ..constants import (
    DOWNLINK_ARRAY_PREFIX,
    DOWNLINK_RECORD,
    STATE_DOWNLINK_MODEL,
    STATE_DOWNLINK_TAG,
)
from ..records import Layout, float_arrays, split_payloads, with_content
from ..settings import config_int, config_str
from ._codecs import CodecCache

__all__ = ["DownlinkError", "DownlinkReceiver"]

_KEYS = ("codec", "codec-params", "mode", "run-seed", "version", "base", "checksum")


class DownlinkError(Exception):
    """The broadcast could not be rebuilt; the message says why and what to do."""


class DownlinkReceiver:
    """Rebuilds compressed broadcasts (one per client mod; caches codecs).

    Parameters
    ----------
    codecs : CodecCache
        Where the codecs come from (shared with the mod's uplink part).
    """

    def __init__(self, *, codecs: CodecCache) -> None:
        self._codecs = codecs

    def receive(self, msg: Message, ctxt: Context) -> Message:
        """``msg`` itself if it carries no compressed broadcast, else a copy whose
        ArrayRecord holds the rebuilt model and whose downlink record is gone."""
        config = msg.content.config_records.get(DOWNLINK_RECORD)
        if config is None:
            return msg
        missing = [k for k in (*_KEYS, "layout") if k not in config]
        if missing:
            raise DownlinkError(
                f"the broadcast's settings lack {missing}; use the same fedrot version "
                "on the server and the clients."
            )
        try:
            layout = Layout.from_json(config_str(config, "layout"))
            codec_name = config_str(config, "codec")
            codec_params = config_str(config, "codec-params")
            version = config_int(config, "version")
            expected = config_int(config, "checksum")
        except ValueError as exc:
            raise DownlinkError(f"{exc}; use the same fedrot version.") from exc
        codec = self._codec(codec_name, codec_params)
        key, record = _array_record(msg)
        payloads, exact = split_payloads(record, DOWNLINK_ARRAY_PREFIX)
        model = self._rebuild(config, codec, payloads, ctxt, layout)
        if checksum(model) != expected:
            _forget(ctxt)
            raise DownlinkError(
                f"the rebuilt model of version {version} differs from the server's "
                "(CRC-32 mismatch); the server sends the full model next time."
            )
        if config["mode"] == "delta":
            _store(ctxt, model, version, _tag(config, layout))
        missing_exact = [k for k in layout.exact_keys if k not in exact]
        if missing_exact:
            raise DownlinkError(f"the broadcast lacks the exact arrays {missing_exact}")
        floats = float_arrays(model, layout)
        arrays = ArrayRecord({k: floats.get(k, exact.get(k)) for k in layout.keys})
        content = RecordDict(
            {k: v for k, v in msg.content.items() if k != DOWNLINK_RECORD}
        )
        content[key] = arrays
        return with_content(msg, content)

    def _rebuild(
        self,
        config: ConfigRecord,
        codec: fedrot.Codec,
        payloads: dict[str, Array],
        ctxt: Context,
        layout: Layout,
    ) -> np.ndarray:
        mode, run_seed = config["mode"], config_int(config, "run-seed")
        version, base = config_int(config, "version"), config_int(config, "base")
        if mode not in MODES:
            raise DownlinkError(f"unknown broadcast mode {mode!r}")
        try:
            if mode == "model":
                blob = _payload(payloads, str(version))
                model = decode_model(codec, blob, run_seed=run_seed, version=version)
            elif base < 0 and "full" in payloads:
                full = self._codec("fp32", "{}")
                blob = _payload(payloads, "full")
                model = decode_model(full, blob, run_seed=run_seed, version=version)
            else:
                held = (
                    np.zeros(layout.d, dtype=np.float32)
                    if base == -1
                    else _held(ctxt, base, _tag(config, layout), layout.d)
                )
                steps = [
                    (u, _payload(payloads, str(u)))
                    for u in range(base + 1, version + 1)
                ]
                model = apply_corrections(held, steps, codec, run_seed=run_seed)
        except (fedrot.PayloadError, ValueError) as exc:
            _forget(ctxt)
            raise DownlinkError(f"cannot decode the broadcast: {exc}") from exc
        if model.shape != (layout.d,):
            raise DownlinkError(
                f"the broadcast holds {model.size} values, its layout {layout.d}"
            )
        return model

    def _codec(self, name: str, params_json: str) -> fedrot.Codec:
        try:
            return self._codecs.get(name, params_json)
        except ValueError as exc:
            raise DownlinkError(f"the broadcast codec: {exc}") from exc


def _array_record(msg: Message) -> tuple[str, ArrayRecord]:
    items = list(msg.content.array_records.items())
    if len(items) != 1:
        raise DownlinkError(f"the broadcast holds {len(items)} ArrayRecords, not 1")
    return items[0]


def _payload(payloads: dict[str, Array], name: str) -> bytes:
    arr = payloads.get(name)
    if arr is None:
        raise DownlinkError(
            f"the broadcast lacks payload {DOWNLINK_ARRAY_PREFIX}{name} (has "
            f"{sorted(payloads)[:4]})"
        )
    return bytes(arr.data)


def _tag(config: ConfigRecord, layout: Layout) -> str:
    """What a held model belongs to: run, codec and layout."""
    parts = (config["run-seed"], config["codec"], config["codec-params"], layout.d)
    return "|".join(repr(p) for p in parts)


def _held(ctxt: Context, base: int, tag: str, d: int) -> np.ndarray:
    record = ctxt.state.array_records.get(STATE_DOWNLINK_MODEL)
    meta = ctxt.state.config_records.get(STATE_DOWNLINK_TAG)
    if record is None or meta is None:
        raise DownlinkError(
            f"the server sent corrections from version {base}, but this node holds no "
            "model (new or restarted node); it gets the full model next time."
        )
    if meta.get("tag") != tag or meta.get("version") != base:
        raise DownlinkError(
            f"the server sent corrections from version {base}, but this node holds "
            f"version {meta.get('version')!r} of {meta.get('tag')!r}; it gets the "
            "full model next time."
        )
    model = record["model"].numpy()
    if model.shape != (d,):
        raise DownlinkError("the held model has another size; full model next time")
    return model


def _store(ctxt: Context, model: np.ndarray, version: int, tag: str) -> None:
    ctxt.state[STATE_DOWNLINK_MODEL] = ArrayRecord({"model": Array(model)})
    ctxt.state[STATE_DOWNLINK_TAG] = ConfigRecord({"version": version, "tag": tag})


def _forget(ctxt: Context) -> None:
    for key in (STATE_DOWNLINK_MODEL, STATE_DOWNLINK_TAG):
        if key in ctxt.state:
            del ctxt.state[key]
