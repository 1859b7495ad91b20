"""The watch folder: `watcher` (the loop and its decisions), `observer` (watchdog events), `schedule`
(settle time and back-off), `quarantine` (bad files and why)."""

from flakehunter.watch.watcher import Watcher

__all__ = ["Watcher"]
