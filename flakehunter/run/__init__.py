"""The run directory: file names and ownership (`layout`), ``manifest.json`` (`manifest`), the candidate
writer (`candidate_writer`) and the status reader (`status`). Scan, detect, watch, the daemon and
``flakehunter status`` all go through here."""

from flakehunter.run.layout import RunDirectory

__all__ = ["RunDirectory"]
