"""Soak test of the watch folder: thousands of files, bad ones among them, the watcher killed with kill -9.

    python benchmarks/watch_soak.py                          # 5,000 files, 1 % truncated, 1 % non-image, 5 kills
    python benchmarks/watch_soak.py --files 500 --kills 2    # a quick run
    python benchmarks/watch_soak.py --json soak.json         # also save the numbers

A producer process writes the files into a watch folder while ``flakehunter watch`` runs: OME-TIFF
frames rendered by the simulator camera (small frames, so detection is cheap and the watcher's own
overheads dominate), each with its own stage position so every file is a distinct image. Good files
are written in three ways: atomically (temporary name, rename), directly (one open/write/close) and
slowly (3-5 chunks with pauses of 0.05-0.8 s, the file held open: longer pauses than the watcher's
settle time make it read too early, find a truncated TIFF and retry). 1 % are TIFFs cut off for good
and 1 % are not images at all (random bytes or text under an image suffix).

While the producer runs, the watcher is killed with SIGKILL at evenly spaced points of its progress
and restarted after a short pause; after the producer is done and everything is accounted for, it
is stopped with SIGTERM. Then the benchmark checks, from the output folder alone:

* every good file is ``done`` in the journal, exactly once in the logs' ``file_done`` events, and its
  candidates are in candidates.jsonl exactly as often as the journal says (no loss, no duplicate);
* every bad file is quarantined, with exactly one line and a reason in quarantine.jsonl;
* peak RSS of every watcher run (its VmHWM, read until the process is gone) stays flat from the first
  run, which starts on nothing, to the last, which starts on the journal and candidates of ~4,000
  images, and RSS within a run rises only by bounded caches.

Exit code 0 when every check holds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHAPE = (120, 180)  # rows, cols: detection of a frame takes a few ms on one core
PIXEL_UM = 1.15


# ------------------------------------------------------------------------------------------- the producer


def render_frames(count: int, seed: int) -> list[Any]:
    """``count`` distinct frames of a dense simulated graphene chip (numpy arrays)."""
    from flakehunter.geometry import PixelTransform
    from flakehunter.hardware.simulator.chip import ChipSpec
    from flakehunter.hardware.simulator.generate import generate_chip
    from flakehunter.hardware.simulator.microscope import SimulatedMicroscope
    from flakehunter.registry import get_registry

    side = 230 * int(count**0.5 + 1)
    spec = ChipSpec(origin_um=(0, 0), size_um=(side, side), thin_flakes=int(side * side / 5000), thick_flakes=20,
                    multilayer_flakes=5, residue_blobs=3, dust=20, min_spacing_um=8)
    layout = generate_chip(spec, get_registry().material("graphene"), 90.0, seed=seed)
    scope = SimulatedMicroscope(layout, seed=seed, transform=PixelTransform(PIXEL_UM), shape=SHAPE)
    per_row = int(count**0.5 + 1)
    return [scope.snap_at(120 + (k % per_row) * 215, 80 + (k // per_row) * 145) for k in range(count)]


def make_plan(files: int, bad_fraction: float, seed: int) -> list[dict[str, Any]]:
    """What the producer writes, file by file; the benchmark checks the outcome against it."""
    rng = random.Random(seed)
    n_bad = max(1, round(files * bad_fraction))
    kinds = ["truncated"] * n_bad + ["nonimage"] * n_bad + ["good"] * (files - 2 * n_bad)
    rng.shuffle(kinds)
    plan = []
    for i, kind in enumerate(kinds):
        entry: dict[str, Any] = {"i": i, "kind": kind}
        if kind == "nonimage":
            entry["name"] = f"img_{i:05d}{rng.choice(['.ome.tif', '.tif', '.png', '.jpg'])}"
            entry["text"] = rng.random() < 0.5
        else:
            entry["name"] = f"img_{i:05d}.ome.tif"
        if kind == "good":
            entry["mode"] = rng.choices(["atomic", "direct", "chunked"], [0.4, 0.4, 0.2])[0]
            if entry["mode"] == "chunked":
                entry["chunks"] = rng.randint(3, 5)
                entry["pause_s"] = round(rng.uniform(0.05, 0.8), 3)
        if kind == "truncated":
            entry["keep"] = round(rng.uniform(0.2, 0.8), 3)
        plan.append(entry)
    return plan


def tiff_bytes(image: Any, i: int) -> bytes:
    from flakehunter.testing.files import ome_tiff_bytes

    # A distinct stage position per file: every file is a new image (and its candidates are never merged).
    return ome_tiff_bytes(image, pixel_size_um=PIXEL_UM, x_um=500.0 * i, y_um=0.0, provenance={"i": i})


def produce(watch_dir: Path, plan_path: Path, rate: float, frames_count: int, seed: int) -> None:
    """The producer process: writes the plan's files at about ``rate`` files per second."""
    plan = json.loads(plan_path.read_text())
    frames = render_frames(frames_count, seed)
    from flakehunter.testing.files import write_slowly

    rng = random.Random(seed + 1)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as slow_writers:
        for entry in plan:
            due = start + entry["i"] / rate
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            path = watch_dir / entry["name"]
            if entry["kind"] == "nonimage":
                data = (b"exposure_ms=20\ngain=1\n" * rng.randint(1, 40)) if entry["text"] else rng.randbytes(
                    rng.randint(10, 50000))
                path.write_bytes(data)
                continue
            data = tiff_bytes(frames[entry["i"] % len(frames)], entry["i"])
            if entry["kind"] == "truncated":
                path.write_bytes(data[: int(len(data) * entry["keep"])])
            elif entry["mode"] == "atomic":
                tmp = watch_dir / f".{entry['name']}.tmp-{os.getpid()}-0"
                tmp.write_bytes(data)
                os.replace(tmp, path)
            elif entry["mode"] == "direct":
                path.write_bytes(data)
            else:
                slow_writers.submit(write_slowly, path, data, entry["chunks"], entry["pause_s"])
    print(f"producer: {len(plan)} files in {time.monotonic() - start:.1f} s", flush=True)


# --------------------------------------------------------------------------------------------- the watcher


class WatcherProcess:
    """``flakehunter watch`` as a child; reaped with wait4 so that its peak RSS is known even after SIGKILL."""

    def __init__(self, watch_dir: Path, out: Path, config: Path, console: Path, done_at_start: int) -> None:
        self.done_at_start = done_at_start
        self.parent_peak_mb = _own_peak_mb()
        with open(console, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flakehunter", "watch", str(watch_dir), "--out", str(out), "--config",
                 str(config)],
                stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
            )
        self.started = time.monotonic()
        self.samples: list[tuple[float, int, float, float]] = []  # (time, files done, RSS MiB, peak RSS MiB)

    def memory_mb(self) -> tuple[float, float] | None:
        """Current and peak resident memory (VmRSS, VmHWM) of the watcher, from /proc."""
        try:
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
            )
            return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
        except (OSError, KeyError, ValueError):
            return None

    def end(self, sig: int) -> dict[str, Any]:
        """Signal the watcher and reap it, reading its peak RSS (VmHWM) every 10 ms until it is gone.

        VmHWM is the process's own high-water mark. ``ru_maxrss`` from wait4 is reported too, but Linux
        charges a child spawned with vfork+exec (what subprocess does) with its parent's peak at exec
        time, so it is not the watcher's own figure.
        """
        os.kill(self.proc.pid, sig)
        peak = max((s[3] for s in self.samples), default=0.0)
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            memory = self.memory_mb()
            if memory is not None:
                peak = max(peak, memory[1])
            time.sleep(0.01)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return {
            "signal": signal.Signals(sig).name,
            "exit_code": self.proc.returncode,
            "seconds": round(time.monotonic() - self.started, 1),
            "peak_rss_mb": round(peak, 1),
            "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
            "benchmark_peak_rss_at_spawn_mb": round(self.parent_peak_mb, 1),
        }


def _own_peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def journal_counts(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    try:
        # closing(): a sqlite3 connection used as a context manager only commits; unclosed ones pile up.
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return dict(conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall())
    except sqlite3.Error:
        return {}


def soak(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="watch-soak-"))
    watch_dir, out = work / "incoming", work / "out"
    watch_dir.mkdir(parents=True, exist_ok=True)
    plan = make_plan(args.files, args.bad_fraction, args.seed)
    plan_path = work / "plan.json"
    plan_path.write_text(json.dumps(plan))
    config = work / "watch.yaml"
    config.write_text(json.dumps({
        "material": {"name": "graphene", "oxide_nm": 90},
        "watch": {"settle_s": 0.3, "retry_initial_s": 0.25, "retry_max_s": 2.0, "max_attempts": 5,
                  "rescan_s": 60, "status_interval_s": 5},
    }))
    good = sum(e["kind"] == "good" for e in plan)
    total = len(plan)
    console = work / "watcher-console.txt"
    rng = random.Random(args.seed + 2)
    thresholds = [int(good * (0.08 + 0.75 * k / max(args.kills - 1, 1))) for k in range(args.kills)]
    print(f"soak: {total} files ({good} good, {total - good} bad) into {watch_dir}; kill -9 at "
          f"{thresholds} files done", flush=True)

    t0 = time.monotonic()
    producer = subprocess.Popen(
        [sys.executable, __file__, "--produce", str(watch_dir), "--plan", str(plan_path), "--rate", str(args.rate),
         "--seed", str(args.seed), "--frames", str(args.frames)],
        cwd=REPO,
    )
    runs: list[dict[str, Any]] = []
    db = out / "journal.sqlite"
    watcher = WatcherProcess(watch_dir, out, config, console, 0)
    deadline = t0 + args.timeout
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.2):
            w = watcher
            memory = w.memory_mb()
            if memory is not None:
                w.samples.append((time.monotonic(), journal_counts(db).get("done", 0), *memory))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for threshold in thresholds:
            while journal_counts(db).get("done", 0) < threshold:
                if time.monotonic() > deadline:
                    raise TimeoutError("soak: timed out before all kills")
                time.sleep(0.1)
            time.sleep(rng.uniform(0.0, 0.5))  # somewhere inside a file, not at a boundary
            done_at_kill = journal_counts(db).get("done", 0)
            run = watcher.end(signal.SIGKILL)
            run.update(done_at_start=watcher.done_at_start, done_at_end=done_at_kill,
                       rss_samples=_summarise_samples(watcher.samples, watcher.done_at_start))
            runs.append(run)
            print(f"soak: run {len(runs)} killed with SIGKILL at {done_at_kill} files done; peak RSS "
                  f"{run['peak_rss_mb']} MiB", flush=True)
            time.sleep(rng.uniform(0.2, 1.5))  # files keep arriving while it is down
            watcher = WatcherProcess(watch_dir, out, config, console, journal_counts(db).get("done", 0))
        while True:
            counts = journal_counts(db)
            if producer.poll() is not None and counts.get("done", 0) + counts.get("quarantined", 0) >= total:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"soak: timed out with {counts}")
            time.sleep(0.2)
        wall = time.monotonic() - t0
        run = watcher.end(signal.SIGTERM)
        run.update(done_at_start=watcher.done_at_start, done_at_end=journal_counts(db).get("done", 0),
                   rss_samples=_summarise_samples(watcher.samples, watcher.done_at_start))
        runs.append(run)
    finally:
        stop_sampling.set()
        if watcher.proc.returncode is None:
            watcher.proc.kill()
            watcher.proc.wait()
        if producer.poll() is None:
            producer.kill()
        producer.wait()
    result = verify(plan, watch_dir, out)
    result.update({
        "files": total, "good": good, "bad": total - good, "kills": args.kills, "producer_rate_files_s": args.rate,
        "frame_shape": list(SHAPE), "wall_s": round(wall, 1), "files_per_s": round(total / wall, 1),
        "runs": runs, "workdir": str(work),
    })
    peaks = [r["peak_rss_mb"] for r in runs]
    growth = [r["rss_samples"].get("rss_last_mb", 0) - r["rss_samples"].get("rss_first_mb", 0) for r in runs]
    result["rss_flat"] = {
        "peak_rss_mb_per_run": peaks,
        "spread_mb": round(max(peaks) - min(peaks), 1),
        "rss_growth_mb_per_run": [round(g, 1) for g in growth],
        "slope_mb_per_1000_files_per_run": [r["rss_samples"].get("growth_mb_per_1000_files") for r in runs],
    }
    # Flat: the last run, which starts on a journal and candidate files of ~5,000 images, peaks where
    # the first, which started on nothing, did. Within a run RSS may rise by bounded caches only
    # (SQLite's page cache is 2 MiB).
    result["checks"]["peak RSS flat across runs (spread < 10 MiB)"] = max(peaks) - min(peaks) < 10.0
    result["checks"]["RSS within every run rises < 5 MiB once warm"] = max(growth) < 5.0
    result["checks"]["SIGTERM: exit code 0"] = runs[-1]["exit_code"] == 0
    result["ok"] = all(result["checks"].values())
    return result


def _summarise_samples(samples: list[tuple[float, int, float, float]], done_at_start: int) -> dict[str, Any]:
    """RSS once a run is warm (50 files in: imports and detector set-up done) and at its end, and the
    slope of RSS against files done (least squares)."""
    steady = [s for s in samples if s[1] >= done_at_start + 50]
    out: dict[str, Any] = {"samples": len(samples)}
    if samples:
        out["peak_rss_sampled_mb"] = round(samples[-1][3], 1)  # VmHWM at the last sample, before the stop
    if not steady:
        return out
    # Where the peak was reached: the files done when VmHWM first came within 0.5 MiB of its last value.
    top = samples[-1][3]
    out["peak_reached_at_files_done"] = next(s[1] for s in samples if s[3] >= top - 0.5)
    out["rss_first_mb"] = round(steady[0][2], 1)
    out["rss_last_mb"] = round(steady[-1][2], 1)
    files = [s[1] for s in steady]
    if len(steady) >= 5 and max(files) - min(files) >= 200:
        mean_f = sum(files) / len(files)
        mean_r = sum(s[2] for s in steady) / len(steady)
        cov = sum((f - mean_f) * (s[2] - mean_r) for f, s in zip(files, steady, strict=True))
        var = sum((f - mean_f) ** 2 for f in files)
        out["growth_mb_per_1000_files"] = round(1000 * cov / var, 3)
        out["files_in_window"] = max(files) - min(files)
    return out


def verify(plan: list[dict[str, Any]], watch_dir: Path, out: Path) -> dict[str, Any]:
    """Check the outcome of every planned file from the output folder alone."""
    from flakehunter.candidates import read_candidates
    from flakehunter.journal import Journal
    from flakehunter.logs import read_log

    with Journal(out / "journal.sqlite") as journal:
        items = {i.key: i for i in journal.items()}
    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines() if line.strip()]
    q_lines = Counter(r["key"] for r in quarantine)
    reasons = {r["key"]: r["reason"] for r in quarantine}
    records = read_log(out / "logs" / "watch.log")
    done_events = Counter(r["file"] for r in records if r.get("event") == "file_done")
    retried = {r["file"] for r in records if r.get("event") == "file_retry"}
    candidates = read_candidates(out)
    per_image = Counter(c.image for c in candidates)

    good_keys = {str((watch_dir / e["name"]).resolve()) for e in plan if e["kind"] == "good"}
    bad_keys = {str((watch_dir / e["name"]).resolve()): e["kind"] for e in plan if e["kind"] != "good"}
    chunked = {str((watch_dir / e["name"]).resolve()) for e in plan if e.get("mode") == "chunked"}
    good_done = sum(1 for k in good_keys if k in items and items[k].status == "done")
    bad_quarantined = sum(1 for k in bad_keys if k in items and items[k].status == "quarantined")
    reason_words = {"truncated": "truncated", "nonimage": "not TIFF, PNG or JPEG data"}
    reasons_ok = sum(1 for k, kind in bad_keys.items() if reason_words[kind] in reasons.get(k, ""))
    candidate_mismatch = [k for k in good_keys if k in items and per_image.get(k, 0) != items[k].data.get("candidates")]
    checks = {
        "every good file done": good_done == len(good_keys),
        "no good file quarantined": not any(items.get(k) and items[k].status == "quarantined" for k in good_keys),
        "every bad file quarantined": bad_quarantined == len(bad_keys),
        "one quarantine line per bad file": all(q_lines[k] == 1 for k in bad_keys) and len(quarantine) == len(bad_keys),
        "every quarantine line has a reason naming the problem": reasons_ok == len(bad_keys),
        "no file analysed to completion twice (file_done events)": max(done_events.values(), default=0) <= 1,
        "candidates per file = journal count (none lost, none doubled)": not candidate_mismatch,
        "candidate ids unique": len({c.id for c in candidates}) == len(candidates),
        "nothing pending": not any(i.status in ("pending", "failed") for i in items.values()),
    }
    return {
        "checks": checks,
        "good_done": good_done,
        "bad_quarantined": bad_quarantined,
        "quarantine_lines": len(quarantine),
        "candidates": len(candidates),
        "files_with_candidates": len(per_image),
        "file_done_events": sum(done_events.values()),
        "done_without_event": len(good_keys) - len(set(done_events) & good_keys),
        "chunked_files": len(chunked),
        "chunked_files_read_early_and_retried": len(chunked & retried),
        "retry_events": sum(1 for r in records if r.get("event") == "file_retry"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--bad-fraction", type=float, default=0.01, help="truncated TIFFs, and as many non-images")
    parser.add_argument("--kills", type=int, default=5)
    # About what the watcher analyses on 2 cores: the folder is written to during the whole soak.
    parser.add_argument("--rate", type=float, default=10.0, help="files per second the producer writes")
    parser.add_argument("--frames", type=int, default=64, help="distinct frames to cycle through")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--workdir", help="keep everything here (default: a new temporary folder)")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--produce", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        produce(Path(args.produce), Path(args.plan), args.rate, args.frames, args.seed)
        return 0
    result = soak(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    print("runs:")
    for k, run in enumerate(result["runs"], 1):
        s = run["rss_samples"]
        print(f"  {k}: {run['signal']:<7} after {run['seconds']:>6} s, {run['done_at_end']:>5} files done, "
              f"peak RSS {run['peak_rss_mb']} MiB (ru_maxrss {run['ru_maxrss_mb']}), "
              f"RSS {s.get('rss_first_mb')} -> {s.get('rss_last_mb')} MiB once warm")
    print("PASS" if result["ok"] else "FAIL")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
