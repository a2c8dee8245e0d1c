"""``python -m simulations``: the sweep runner (see fedrot_sim/sweep.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fedrot_sim.sweep import main  # noqa: E402

sys.exit(main())
