"""Pictures of a run from its metrics rows: two small-multiples figures, one PNG each.

- `training.png`, the paper's training panels (its Figure 3): Pass@1 with its standard error
  and Pass@k at each evaluation, submits and mean turns per DAPO iteration.
- `diagnostics.png`, one panel per DAPO diagnostic: reward, pass rate, clip fractions, the
  sampler/trainer log-probability gap, loss, tokens per second, accelerator idle fraction, and
  the like (`DIAGNOSTIC_PANELS`).

Every x axis counts DAPO iterations from 1: an evaluation sits at the iterations done before
it, a DAPO row at its iteration + 1, so the evaluation after iteration N lines up with iteration
N. The evaluations before any DAPO iteration (initial, after RFT) both have 0 done; they sit
just either side of 0.

What to draw is plain data (`Panel`, `Chart`, `Series`), built by pure functions; matplotlib
is imported only to draw, so the report shares these definitions without it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence

TRAINING_PNG = "training.png"
DIAGNOSTICS_PNG = "diagnostics.png"
# Matplotlib's default cycle: the same metric keeps its color in every panel.
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
PER_ITERATION = "DAPO iteration"  # a DAPO row's x: its iteration, counted from 1
_STAGE_MARKERS = {"initial": "s", "rft": "D", "dapo": "o"}
_STAGE_NAMES = {"initial": "initial", "rft": "after RFT", "dapo": "after DAPO"}
_NICE_STEPS = (1, 2, 5, 10)  # ticks every 1, 2, 5, 10, 20, 50, ... (not 15, 30, 45)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One number of a DAPO row: a field of it (or of its rollout summary), or derived."""

    label: str
    value: Callable[[object], float | None]  # None: the row does not have it
    fmt: str = "{:.3f}"  # as a table cell shows it
    column: str = ""  # a table's header, where the label alone says too little ("mean")

    @property
    def header(self) -> str:
        return self.column or self.label

    def of(self, row) -> float | None:
        value = self.value(row)
        # + 0.0: a cell reads "0.000", not "-0.000"
        return None if value is None or not math.isfinite(value) else float(value) + 0.0

    def cell(self, row) -> str:
        value = self.of(row)
        return "" if value is None else self.fmt.format(value)


def field(name: str, label: str = "", fmt: str = "{:.3f}", column: str = "") -> Metric:
    """The DAPO row's field `name` ("rollout.NAME" for its rollout summary). A field some rows
    lack (one added after the run that wrote them) reads as None, and draws nothing."""

    def value(row):
        for part in name.split("."):
            row = getattr(row, part, None)
        return None if row is None else float(row)

    return Metric(label or name, value, fmt, column)


def tokens_per_second(row) -> float | None:
    """Trajectory tokens (prompts, replies, observations) per second of the rollout."""
    return row.rollout.tokens / row.rollout_s if row.rollout_s > 0 else None


TOKENS_PER_SECOND = Metric("tokens / s", tokens_per_second, "{:,.0f}")


@dataclasses.dataclass(frozen=True)
class Panel:
    """One small plot of DAPO metrics: a line per metric."""

    title: str
    ylabel: str
    metrics: tuple[Metric, ...]
    unit_interval: bool = False  # a fraction: the y axis spans 0 to 1
    log_scale: bool = False  # values spanning orders of magnitude (when all are positive)

    def available(self, rows: Sequence) -> bool:
        return any(m.of(row) is not None for m in self.metrics for row in rows)


DIAGNOSTIC_PANELS = (
    Panel("Reward", "mean reward", (field("rollout.reward", "reward"),)),
    Panel("Pass rate", "resolved fraction", (field("rollout.pass_rate", "pass rate"),), True),
    Panel(
        "PPO clipping",
        "fraction of tokens",
        (field("clip_low", "clip low", "{:.2%}"), field("clip_high", "clip high", "{:.2%}")),
    ),
    Panel(
        "Sampler vs trainer log-prob gap",
        "|Δ log p|",
        (
            field("logprob_gap_mean", "mean", "{:.2e}", "log-prob gap mean"),
            field("logprob_gap_max", "max", "{:.2e}", "log-prob gap max"),
        ),
        log_scale=True,
    ),
    Panel("Loss", "mean over steps", (field("loss"),)),
    Panel("Gradient norm", "global norm", (field("grad_norm", "grad norm"),)),
    Panel("Entropy", "nats per token", (field("entropy"),)),
    Panel("Rollout throughput", "tokens / s", (TOKENS_PER_SECOND,)),
    Panel("Accelerator idle", "fraction of rollout", (field("idle_fraction", "idle"),), True),
    Panel(
        "Zero-advantage filter",
        "fraction dropped",
        (field("filtered_fraction", "filtered"),),
        True,
    ),
    # Drawn only for rows that have them (runs written before these fields have not).
    Panel(
        "Positive advantages",
        "fraction of trained trajectories",
        (field("advantage_positive", "positive"),),
        True,
    ),
    Panel(
        "Advantage per action token",
        "mean advantage",
        (field("advantage_token_mean", "token mean", column="advantage token mean"),),
    ),
)


@dataclasses.dataclass(frozen=True)
class Series:
    """A line of points; `errors` draws error bars, `markers` one marker per point."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    errors: tuple[float, ...] | None = None
    markers: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Chart:
    """A panel ready to draw."""

    title: str
    ylabel: str
    series: tuple[Series, ...]
    unit_interval: bool = False
    log_scale: bool = False
    xlabel: str = "DAPO iterations done"
    counts: bool = False  # whole numbers: integer y ticks


def dapo_rows(rows: Sequence) -> list:
    return [r for r in rows if r.KIND == "dapo"]


def eval_rows(rows: Sequence) -> list:
    return [r for r in rows if r.KIND == "eval"]


def evaluation_x(evals: Sequence) -> tuple[float, ...]:
    """DAPO iterations done at each evaluation; the initial one and the one after RFT (both 0
    done) just left and right of 0, so neither hides the other's error bar."""
    span = max([1] + [r.iterations for r in evals])
    dodge = max(0.12, 0.02 * span)
    shift = {"initial": -dodge, "rft": dodge} if any(r.stage == "rft" for r in evals) else {}
    return tuple(r.iterations + shift.get(r.stage, 0.0) for r in evals)


def training_charts(rows: Sequence) -> list[Chart]:
    """The paper's Figure 3: Pass@1 (± standard error), Pass@k, submits and mean turns."""
    charts = []
    evals = eval_rows(rows)
    if evals:
        x, markers = evaluation_x(evals), tuple(_STAGE_MARKERS.get(r.stage, "o") for r in evals)
        k = evals[-1].passes.runs
        pass_at_1 = Series(
            "Pass@1",
            x,
            tuple(r.passes.pass_at_1 for r in evals),
            tuple(r.passes.pass_at_1_stderr for r in evals),
            markers,
        )
        pass_at_k = Series(f"Pass@{k}", x, tuple(r.passes.pass_at_k for r in evals), None, markers)
        charts.append(Chart("Pass@1 (± standard error)", "resolved fraction", (pass_at_1,), True))
        charts.append(
            Chart(f"Pass@{k} ({k} runs per task)", "resolved fraction", (pass_at_k,), True)
        )
    dapo = dapo_rows(rows)
    if dapo:
        x = tuple(float(r.iteration + 1) for r in dapo)
        submits = Series("submits", x, tuple(float(r.rollout.submits) for r in dapo))
        turns = Series("mean turns", x, tuple(r.rollout.mean_turns for r in dapo))
        charts.append(
            Chart(
                "Submits",
                "trajectories that submitted",
                (submits,),
                xlabel=PER_ITERATION,
                counts=True,
            )
        )
        charts.append(Chart("Mean turns", "turns per trajectory", (turns,), xlabel=PER_ITERATION))
    return charts


def diagnostic_charts(rows: Sequence, panels: Sequence[Panel] = DIAGNOSTIC_PANELS) -> list[Chart]:
    """One chart per panel whose metrics the DAPO rows have."""
    dapo = dapo_rows(rows)
    charts = []
    for panel in panels:
        if not panel.available(dapo):
            continue
        series = []
        for metric in panel.metrics:
            points = [(r.iteration + 1.0, metric.of(r)) for r in dapo if metric.of(r) is not None]
            if points:
                x, y = zip(*points, strict=True)
                series.append(Series(metric.label, x, y))
        charts.append(
            Chart(
                panel.title,
                panel.ylabel,
                tuple(series),
                panel.unit_interval,
                panel.log_scale,
                PER_ITERATION,
            )
        )
    return charts


def figures(rows: Sequence) -> dict[str, list[Chart]]:
    """The charts of each PNG file; a file with none is not drawn."""
    drawn = {TRAINING_PNG: training_charts(rows), DIAGNOSTICS_PNG: diagnostic_charts(rows)}
    return {name: charts for name, charts in drawn.items() if charts}


def write_plots(rows: Sequence, directory: str) -> list[str]:
    """PNG files written to `directory` (none when there is nothing to draw yet)."""
    written = []
    for name, charts in figures(rows).items():
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(draw(charts))
        written.append(path)
    return written


def grid_shape(panels: int, max_columns: int = 4) -> tuple[int, int]:
    """Rows and columns of a grid for `panels` panels: at most `max_columns` wide, as square
    as that allows (2 x 2 for four, 3 x 4 for twelve)."""
    columns = min(max_columns, math.ceil(math.sqrt(panels)))
    return math.ceil(panels / columns), columns


def draw(charts: Sequence[Chart], dpi: int = 100) -> bytes:
    """The charts as one PNG: a grid of small panels."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows, columns = grid_shape(len(charts))
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.6 * columns, 2.8 * rows), squeeze=False, layout="constrained"
    )
    flat = axes.ravel()
    for ax, chart in zip(flat, charts, strict=False):
        _draw_chart(ax, chart)
    for ax in flat[len(charts) :]:
        ax.set_visible(False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def _draw_chart(ax, chart: Chart) -> None:
    from matplotlib.ticker import MaxNLocator

    for color, series in zip(COLORS, chart.series, strict=False):
        size = 22 if len(series.x) <= 30 else 6  # a long run's points would hide its line
        ax.plot(series.x, series.y, color=color, linewidth=1.5, label=series.label)
        if series.errors is not None:
            ax.errorbar(
                series.x, series.y, series.errors, fmt="none", ecolor=color, capsize=3, alpha=0.8
            )
        markers = series.markers or ("o",) * len(series.x)
        for marker in dict.fromkeys(markers):  # one scatter call per marker shape
            points = [
                (x, y) for x, y, m in zip(series.x, series.y, markers, strict=True) if m == marker
            ]
            px, py = zip(*points, strict=True)
            ax.scatter(px, py, marker=marker, color=color, s=size, zorder=3)
    ax.set_title(chart.title, fontsize=11)
    ax.set_xlabel(chart.xlabel, fontsize=9)
    ax.set_ylabel(chart.ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    # min_n_ticks=1: integer ticks even on an axis with one or two integers in its span
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1, steps=_NICE_STEPS))
    if chart.counts:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1, steps=_NICE_STEPS))
    xs = [x for series in chart.series for x in series.x]
    if xs:  # at least one unit wide: integer ticks need an integer to land on
        pad = max(0.5, 0.04 * (max(xs) - min(xs)))
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.grid(alpha=0.3)
    if chart.unit_interval:
        ax.set_ylim(-0.03, 1.03)
    elif chart.log_scale and all(y > 0 for s in chart.series for y in s.y):
        ax.set_yscale("log")
    if len(chart.series) > 1:
        ax.legend(fontsize=8)
    markers = chart.series[0].markers if chart.series else None
    if markers and len(set(markers)) > 1:  # which point is which evaluation
        _stage_legend(ax, markers)


def _stage_legend(ax, markers: Sequence[str]) -> None:
    from matplotlib.lines import Line2D

    names = {marker: _STAGE_NAMES[stage] for stage, marker in _STAGE_MARKERS.items()}
    handles = [
        Line2D([], [], marker=m, linestyle="none", color="0.3", label=names[m])
        for m in dict.fromkeys(markers)
    ]
    ax.legend(handles=handles, fontsize=8, loc="best")
