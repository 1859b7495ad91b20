"""Acquisition: the plan of a scan, the engine that takes one tile, and the runner that decides when."""
