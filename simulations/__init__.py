"""fedrot simulations: ``python -m simulations --preset default --out DIR``."""
