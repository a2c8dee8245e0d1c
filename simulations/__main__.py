"""``python -m simulations``: the sweep runner (see fedrot_sim/sweep.py)."""

import signal
import sys
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fedrot_sim.sweep import main  # noqa: E402


def _unwind(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so the SuperLink the sweep started is stopped."""
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _unwind)
sys.exit(main())
