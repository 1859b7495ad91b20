"""The watchdog side of the watch folder: OS events (or polling) turned into (kind, path) items on a queue.

Anything watchdog calls happens on its observer's thread, so the handler only queues; the watcher's
own thread decides. An exception in the handler would end watchdog's dispatch loop, so every one is
caught and logged; an observer that dies anyway is restarted by the watcher (`FolderObserver.alive`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
from pathlib import Path
from typing import Any

from flakehunter.errors import RuntimeFailure

log = logging.getLogger(__name__)

#: What the inbox carries: ("created" | "modified" | "closed" | "deleted" | "dir" | "wake", path).
Event = tuple[str, str]


class EventInbox:
    """The watchdog handler: turns events into (kind, path) items on a queue and never raises."""

    def __init__(self, inbox: queue.SimpleQueue[Event]) -> None:
        self.inbox = inbox
        self.errors = 0

    def dispatch(self, event: Any) -> None:
        try:
            kind = event.event_type  # created, modified, closed, moved, deleted, ...
            if event.is_directory:
                if kind in ("created", "moved"):
                    self.inbox.put(("dir", os.fsdecode(event.dest_path or event.src_path)))
                return
            if kind == "moved":
                self.inbox.put(("deleted", os.fsdecode(event.src_path)))
                if event.dest_path:
                    self.inbox.put(("created", os.fsdecode(event.dest_path)))
            elif kind in ("created", "modified", "closed", "deleted"):
                self.inbox.put((kind, os.fsdecode(event.src_path)))
            elif kind == "attrib":  # touch: a new mtime, maybe the same bytes
                self.inbox.put(("modified", os.fsdecode(event.src_path)))
        except Exception:  # never let one odd event end the observer
            self.errors += 1
            log.exception("watch: event handler error (ignored)", extra={"event": "handler_error"})


class FolderObserver:
    """A watchdog observer on one folder: native OS events, or polling (network shares, or as a fallback).

    Args:
        folder: the folder to watch.
        inbox: where events go.
        recursive: also watch sub-folders.
        polling: poll instead of OS events.
        poll_interval_s: the polling period.
    """

    def __init__(
        self, folder: Path, inbox: queue.SimpleQueue[Event], *, recursive: bool, polling: bool, poll_interval_s: float
    ) -> None:
        self.folder = folder
        self.handler = EventInbox(inbox)
        self.recursive = recursive
        self.polling = polling
        self.poll_interval_s = poll_interval_s
        self.kind = ""
        self._observer: Any = None

    def start(self) -> None:
        """Start watching; falls back to polling when the OS refuses more watches (inotify limits)."""
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        observer: Any
        try:
            if self.polling:
                observer, kind = PollingObserver(timeout=self.poll_interval_s), "polling"
            else:
                observer, kind = Observer(), "native"
            observer.schedule(self.handler, str(self.folder), recursive=self.recursive)
            observer.start()
        except OSError as exc:  # e.g. the inotify instance or watch limit; polling still works
            if self.polling:
                raise RuntimeFailure(f"{self.folder}: cannot watch the folder: {exc}") from exc
            log.warning("watch: OS events unavailable (%s); polling every %g s instead", exc,
                        self.poll_interval_s, extra={"event": "observer_fallback"})
            observer, kind = PollingObserver(timeout=self.poll_interval_s), "polling"
            observer.schedule(self.handler, str(self.folder), recursive=self.recursive)
            observer.start()
        self._observer, self.kind = observer, kind

    def stop(self) -> None:
        if self._observer is None:
            return
        with contextlib.suppress(Exception):
            self._observer.stop()
            self._observer.join(timeout=10)
        self._observer = None

    @property
    def alive(self) -> bool:
        """False when the observer thread has died (it is then restarted, and the folder swept)."""
        return self._observer is None or self._observer.is_alive()

    def restart(self) -> None:
        log.error("watch: the %s observer stopped; restarting it and rescanning", self.kind,
                  extra={"event": "observer_restart"})
        self.stop()
        self.start()
