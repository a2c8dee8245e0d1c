"""Why train replies did not count, and when a lost round must raise.

Every train reply that does not contribute to the aggregate becomes a
:class:`Failure` with one of :data:`fedrot.constants.FAILURE_REASONS`. The server
wrapper reports their counts per round; a round whose replies all failed for
fedrot's own reasons (:data:`fedrot.constants.FEDROT_FAILURES`) raises with the fix
instead of continuing with a frozen model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from flwr.app import Message
from flwr.common.constant import ErrorCode

from ..constants import (
    FAILURE_REASONS,
    FEDROT_FAILURES,
    METRIC_FAILED_PREFIX,
    METRIC_FAILED_REPLIES,
    MOD_ERROR_PREFIX,
)

__all__ = ["Failure", "error_reason", "failure_metrics", "raise_if_fedrot_lost"]

_CLIENT_EXCEPTION = {
    ErrorCode.LOAD_CLIENT_APP_EXCEPTION,
    ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
    ErrorCode.CLIENT_APP_CRASHED,
}
_NODE_UNAVAILABLE = {
    ErrorCode.NODE_UNAVAILABLE,
    ErrorCode.MESSAGE_UNAVAILABLE,
    ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
}
#: What to do when every reply of a round failed for one fedrot reason.
_FIXES = {
    "no-payload": "Add the client mod first in the ClientApp's mods: "
    "`ClientApp(mods=[fedrot.clients.compression_mod])`.",
    "client-mod": "The clients' reasons above say what to change.",
    "mismatch": "Run the same fedrot version and codec settings on the server and "
    "the clients, and return the received model's arrays from the ClientApp.",
    "corrupt": "Run the same fedrot version on the server and the clients; payloads "
    "that fail their checks on every client point to a version or transport problem.",
}


@dataclass(frozen=True)
class Failure:
    """One train reply that did not count: its reason and what was wrong."""

    reason: str  # one of FAILURE_REASONS
    problem: str


def failure_metrics(failures: list[Failure]) -> dict[str, int]:
    """The total and one count per reason (zeros included), as metric entries."""
    counts = Counter(f.reason for f in failures)
    out = {METRIC_FAILED_REPLIES: len(failures)}
    out.update({METRIC_FAILED_PREFIX + r: counts[r] for r in FAILURE_REASONS})
    return out


def error_reason(msg: Message) -> str:
    """The failure reason of an error reply (see ``FAILURE_REASONS``)."""
    code, text = msg.error.code, msg.error.reason or ""
    if code == ErrorCode.MOD_FAILED_PRECONDITION and text.startswith(MOD_ERROR_PREFIX):
        return "client-mod"
    if code in _CLIENT_EXCEPTION:
        return "client-exception"
    if code in _NODE_UNAVAILABLE:
        return "node-unavailable"
    return "other-error"


def raise_if_fedrot_lost(server_round: int, failures: list[Failure]) -> None:
    """Raise if every one of a round's failed replies (none counted) was fedrot's."""
    if not failures or not all(f.reason in FEDROT_FAILURES for f in failures):
        return
    n_replies = len(failures)
    first: dict[str, str] = {}
    for f in failures:
        first.setdefault(f.reason, f.problem)
    details = "; ".join(
        f"{r} x{sum(f.reason == r for f in failures)}: {p}" for r, p in first.items()
    )
    fixes = " ".join(_FIXES[r] for r in first)
    raise RuntimeError(
        f"All {n_replies} train replies of round {server_round} failed because of "
        f"fedrot, so the model cannot change ({details}). {fixes}"
    )
