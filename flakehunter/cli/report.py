"""``flakehunter report``, ``review`` and ``export``: what people look at after a run (docs/reports.md).

* ``flakehunter report RUN_DIR`` writes ``RUN_DIR/report/`` (overview mosaic, gallery, index.html).
* ``flakehunter review RUN_DIR`` serves that report on 127.0.0.1 with keys that record verdicts in
  ``RUN_DIR/review.jsonl``.
* ``flakehunter export RUN_DIR --format mm-pos|useq|geojson|csv`` writes the (filtered) candidates for
  Micro-Manager, pymmcore-plus/useq, GIS-style viewers or spreadsheets.

The filter options are shared with ``flakehunter goto``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flakehunter.cli._common import reports_errors

if TYPE_CHECKING:
    from flakehunter.report.filters import CandidateFilter


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("review")(review)
    app.command("export")(export)


# Filters shared by export and goto.
LayerClassOpt = Annotated[list[str] | None, typer.Option(
    "--layer-class", help="Only these layer classes, e.g. 1L,2L (repeat or comma-separate).")]
MinAreaOpt = Annotated[float | None, typer.Option("--min-area-um2", help="Only candidates at least this large (µm²).")]
MaxAreaOpt = Annotated[float | None, typer.Option("--max-area-um2", help="Only candidates at most this large (µm²).")]
MinScoreOpt = Annotated[float | None, typer.Option("--min-score", help="Only candidates scoring at least this (0-1).")]
ReviewedOpt = Annotated[str | None, typer.Option(
    "--reviewed", help="Only candidates reviewed good, bad, favourite, or unreviewed (flakehunter review).")]


def candidate_filter(
    layer_class: list[str] | None, min_area_um2: float | None, max_area_um2: float | None,
    min_score: float | None, reviewed: str | None,
) -> CandidateFilter:
    """The filter the options describe (`InputError` names a wrong option)."""
    from flakehunter.report.filters import CandidateFilter

    return CandidateFilter.from_options(layer_class, min_area_um2, max_area_um2, min_score, reviewed)


@reports_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A scan, detect or watch run directory.", show_default=False)],
    overview_px: Annotated[int, typer.Option("--overview-px", help="Long side of the overview mosaic (pixels).")]
    = 2000,
    workers: Annotated[int | None, typer.Option("--workers", help="Threads reading images (default: CPUs, <= 8).")]
    = None,
) -> None:
    """Write RUN_DIR/report/: overview mosaic, candidate gallery with filters, summary (index.html)."""
    from flakehunter.report.builder import write_report

    if workers is not None and workers < 1:
        from flakehunter.errors import InputError

        raise InputError(f"--workers: expected at least 1, got {workers}")
    write_report(run_dir, overview_max_px=overview_px, workers=workers, echo=typer.echo)


@reports_errors
def review(
    run_dir: Annotated[Path, typer.Argument(help="A scan, detect or watch run directory.", show_default=False)],
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: a free one).")] = 0,
    host: Annotated[str, typer.Option("--host", help="Only 127.0.0.1 is allowed: the server has no accounts.")]
    = "127.0.0.1",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Write the report again before serving it.")] = False,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in a browser.")] = False,
) -> None:
    """Serve the report on 127.0.0.1 and record verdicts (keys g good, b bad, f favourite, n notes)."""
    from flakehunter.report.builder import write_report
    from flakehunter.report.files import INDEX
    from flakehunter.report.server import ReviewServer, check_host
    from flakehunter.run.layout import RunDirectory

    check_host(host)  # before anything is written or opened
    if not 0 <= port <= 65535:
        from flakehunter.errors import InputError

        raise InputError(f"--port: expected 0..65535, got {port}")
    run = RunDirectory(run_dir)
    index = run.report / INDEX
    newest_input = max((p.stat().st_mtime for p in (run.candidates_jsonl, run.manifest) if p.exists()), default=0.0)
    if rebuild or not index.exists() or index.stat().st_mtime < newest_input:
        write_report(run_dir, echo=typer.echo)
    server = ReviewServer(run_dir, host=host, port=port)
    typer.echo(f"Reviewing {run.path} at {server.url}  (Ctrl-C to stop; verdicts go to {run.review})")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    server.serve()
    typer.echo(f"stopped; {run.report / INDEX} shows the verdicts")


@reports_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A scan, detect or watch run directory.", show_default=False)],
    format: Annotated[str, typer.Option("--format", "-f", help="mm-pos, useq, geojson or csv.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File to write (default: RUN_DIR/exports/"
                                                                 "candidates.pos|.useq.json|.geojson|.csv).")] = None,
    layer_class: LayerClassOpt = None,
    min_area_um2: MinAreaOpt = None,
    max_area_um2: MaxAreaOpt = None,
    min_score: MinScoreOpt = None,
    reviewed: ReviewedOpt = None,
    xy_stage: Annotated[str, typer.Option("--xy-stage", help="mm-pos: the Micro-Manager XY stage device.")]
    = "XYStage",
    z_stage: Annotated[str, typer.Option("--z-stage", help="mm-pos: the Micro-Manager focus device ('' for none).")]
    = "ZStage",
) -> None:
    """Write the candidates (best first, filtered) for Micro-Manager, useq/pymmcore-plus, GeoJSON or CSV."""
    from flakehunter.report.exports import export as run_export

    flt = candidate_filter(layer_class, min_area_um2, max_area_um2, min_score, reviewed)
    path, written, unplaced = run_export(run_dir, format, out, flt, xy_stage=xy_stage, z_stage=z_stage)
    typer.echo(f"{written} candidates ({flt.describe()}) written to {path}")
    if unplaced:
        typer.secho(f"warning: {unplaced} candidates have no stage position (their images carried none) and were "
                    "left out", fg=typer.colors.YELLOW, err=True)
