"""fedrot benchmark suite (not part of the test run); see :mod:`bench.run`."""
