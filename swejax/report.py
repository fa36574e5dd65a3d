"""runs/<name>/report.html: a run on one page, a file that needs nothing else to show.

The page holds the run's name, a few key config values, one line per evaluation (Pass@1 with
its standard error, Pass@k, submits, mean turns, and the change in Pass@1 from the evaluation
before with the standard error of that difference), the plots (embedded as base64 PNGs, so the
one file is the whole report), and one line per DAPO iteration of diagnostics.
No JavaScript and no external URL: it reads the same in any browser, offline, or attached to a
message. Every piece of text is escaped.

`render_report` is a pure function of the rows, the config and the PNGs; `write_report` writes
the page of a finished run from the PNG files `swejax.plots.write_plots` wrote.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from swejax.config import Config
from swejax.plots import (
    DIAGNOSTIC_PANELS,
    DIAGNOSTICS_PNG,
    TOKENS_PER_SECOND,
    TRAINING_PNG,
    Metric,
    dapo_rows,
    eval_rows,
    field,
)

if TYPE_CHECKING:  # the run package imports JAX; the page needs none of it
    from swejax.run._rows import PassMetrics

_IMAGE_TITLES = {TRAINING_PNG: "Training curves", DIAGNOSTICS_PNG: "DAPO diagnostics"}
_STAGES = {"initial": "initial", "rft": "after RFT"}


@dataclasses.dataclass(frozen=True)
class Image:
    """A PNG the page shows."""

    title: str
    png: bytes


@dataclasses.dataclass(frozen=True)
class Change:
    """Pass@1 of one evaluation minus the one before; the standard error of that difference
    is sqrt(se1² + se2²), the two evaluations' runs being independent."""

    value: float
    stderr: float


@dataclasses.dataclass(frozen=True)
class EvaluationLine:
    """One line of the summary table."""

    stage: str  # as a person reads it: "initial", "after RFT", "after iteration 4"
    iterations: int  # DAPO iterations done
    passes: PassMetrics
    submits: int
    trajectories: int
    mean_turns: float
    change: Change | None  # None for the first evaluation


def stage_name(row) -> str:
    return _STAGES.get(row.stage, f"after iteration {row.iterations}")


def pass_at_1_change(before: PassMetrics, after: PassMetrics) -> Change:
    stderr = math.hypot(before.pass_at_1_stderr, after.pass_at_1_stderr)
    return Change(after.pass_at_1 - before.pass_at_1, stderr)


def evaluation_lines(rows: Sequence) -> list[EvaluationLine]:
    evals = eval_rows(rows)
    lines = []
    for before, row in zip([None, *evals], evals, strict=False):
        lines.append(
            EvaluationLine(
                stage=stage_name(row),
                iterations=row.iterations,
                passes=row.passes,
                submits=row.rollout.submits,
                trajectories=row.rollout.trajectories,
                mean_turns=row.rollout.mean_turns,
                change=None if before is None else pass_at_1_change(before.passes, row.passes),
            )
        )
    return lines


def _ids(spec: str, empty: str) -> str:
    """A comma-separated id list as a few words: a long list is its count."""
    ids = [i for i in spec.split(",") if i.strip()]
    if not ids:
        return empty
    return spec if len(ids) <= 3 else f"{len(ids)} ids: {', '.join(ids[:2])}, …"


def config_items(config: Config) -> list[tuple[str, str]]:
    """The config keys a reader asks about first, and their values."""
    items = [("model.preset", config.model.preset)]
    if config.model.checkpoint:
        items.append(("model.checkpoint", config.model.checkpoint))
    if config.train.init_from:
        items.append(("train.init_from", config.train.init_from))
    items += [
        ("tasks.source", config.tasks.source),
        ("tasks.train", _ids(config.tasks.train, "every task not held out")),
        ("tasks.eval", _ids(config.tasks.eval, "the training tasks")),
    ]
    if config.tasks.eval_repos:
        items.append(("tasks.eval_repos", config.tasks.eval_repos))
    if config.tasks.curate_from:
        items.append(("tasks.curate_from", config.tasks.curate_from))
    items += [("tasks.runtime", config.tasks.runtime), ("rft.source", config.rft.source or "none")]
    if config.rft.source:
        items += [
            ("rft.epochs", str(config.rft.epochs)),
            ("rft.learning_rate", f"{config.rft.learning_rate:g}"),
        ]
    d = config.dapo
    items += [
        ("dapo.iterations", str(d.iterations)),
        ("dapo.tasks_per_iteration", str(d.tasks_per_iteration)),
        ("dapo.group_size", str(d.group_size)),
        ("dapo.batch_size", str(d.batch_size)),
        ("dapo.learning_rate", f"{d.learning_rate:g}"),
        ("dapo.eps_low / eps_high", f"{d.eps_low:g} / {d.eps_high:g}"),
        ("dapo.pi_old", d.pi_old),
        ("scaffold.max_turns", str(config.scaffold.max_turns)),
        ("eval.runs", str(config.eval.runs)),
        ("eval.every", str(config.eval.every) if config.eval.every else "before and after"),
        ("seed", str(config.seed)),
    ]
    return items


# The per-iteration table: the rollout first, then every diagnostic the plots draw.
ITERATION_COLUMNS: tuple[Metric, ...] = (
    field("rollout.trajectories", "trajectories", "{:.0f}"),
    field("rollout.submits", "submits", "{:.0f}"),
    field("rollout.mean_turns", "mean turns", "{:.2f}"),
    field("rollout.tokens", "tokens", "{:,.0f}"),
    *(
        m
        for panel in DIAGNOSTIC_PANELS
        for m in panel.metrics
        if m is not TOKENS_PER_SECOND  # after the timings, which it is made of
    ),
    field("rollout_s", "rollout s", "{:.1f}"),
    TOKENS_PER_SECOND,
    field("seconds", "iteration s", "{:.1f}"),
)


def iteration_columns(rows: Sequence) -> list[Metric]:
    """The columns the DAPO rows have (a field added after the run wrote them has none)."""
    dapo = dapo_rows(rows)
    return [m for m in ITERATION_COLUMNS if any(m.of(r) is not None for r in dapo)]


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _signed(value: float) -> str:
    return f"{value:+.3f}".replace("-", "−")


def _table(table_id: str, header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A table of escaped cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in body)
    return (
        f'<table id="{_e(table_id)}"><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>'
    )


def evaluations_table(lines: Sequence[EvaluationLine]) -> str:
    k = lines[-1].passes.runs
    header = (
        "stage",
        "DAPO iterations done",
        "Pass@1 ± stderr",
        f"Pass@{k}",
        "submits",
        "mean turns",
        "ΔPass@1 ± stderr",
    )
    body = [
        (
            line.stage,
            str(line.iterations),
            f"{line.passes.pass_at_1:.3f} ± {line.passes.pass_at_1_stderr:.3f}",
            f"{line.passes.pass_at_k:.3f}",
            f"{line.submits} of {line.trajectories}",
            f"{line.mean_turns:.2f}",
            ""
            if line.change is None
            else f"{_signed(line.change.value)} ± {line.change.stderr:.3f}",
        )
        for line in lines
    ]
    return _table("evaluations", header, body)


def iterations_table(rows: Sequence) -> str:
    columns = iteration_columns(rows)
    header = ["iteration", *(m.header for m in columns)]
    body = [[str(r.iteration + 1), *(m.cell(r) for m in columns)] for r in dapo_rows(rows)]
    return _table("iterations", header, body)


def headline(lines: Sequence[EvaluationLine], iterations: int) -> str:
    """One sentence: where Pass@1 started and ended."""
    if not lines:
        return f"{iterations} DAPO iterations; no evaluation."
    first, last = lines[0], lines[-1]
    text = f"Pass@1 {first.passes.pass_at_1:.3f} ({first.stage})"
    if len(lines) > 1:
        change = pass_at_1_change(first.passes, last.passes)
        text += (
            f" → {last.passes.pass_at_1:.3f} ({last.stage}), "
            f"{_signed(change.value)} ± {change.stderr:.3f}"
        )
    return f"{text}; {iterations} DAPO iterations."


def _rft_sentence(rows: Sequence) -> str:
    rft = [r for r in rows if r.KIND == "rft"]
    if not rft:
        return ""
    r = rft[-1]
    return (
        f"<p>RFT trained on {_e(r.trained_on)} of {_e(r.trajectories)} trajectories in "
        f"{_e(r.steps)} optimizer steps, loss {_e(f'{r.loss_first:.3f}')} → "
        f"{_e(f'{r.loss_last:.3f}')}.</p>"
    )


def _figure(image: Image) -> str:
    data = base64.b64encode(image.png).decode("ascii")
    return (
        f'<figure><img alt="{_e(image.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(image.title)}</figcaption></figure>"
    )


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1500px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
.headline { font-size: 1.15em; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td { white-space: nowrap; }
th { background: #f0f0f0; }
td:first-child, th:first-child, #config td, #config th { text-align: left; }
#config td { white-space: normal; }
tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 0 0 1.5em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; }
.note { color: #555; font-size: 0.9em; }
.wide { overflow-x: auto; }  /* many columns scroll in their box, not the page */
"""


def render_report(rows: Sequence, config: Config, images: Sequence[Image] = ()) -> str:
    """The whole page, as one string."""
    name = f"swejax run {config.name}"
    lines = evaluation_lines(rows)
    dapo = dapo_rows(rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(name)}</h1>",
        f'<p class="headline">{_e(headline(lines, len(dapo)))}</p>',
        "<h2>Evaluations</h2>",
    ]
    if lines:
        parts.append(evaluations_table(lines))
        parts.append(
            '<p class="note">Pass@1 is the mean over each task\'s runs, with its standard error; '
            "ΔPass@1 is the change from the evaluation before, with the standard error of the "
            "difference, √(se₁² + se₂²).</p>"
        )
    else:
        parts.append("<p>No evaluation yet.</p>")
    parts.append(_rft_sentence(rows))
    if images:
        parts.append("<h2>Plots</h2>")
        parts += [_figure(image) for image in images]
    parts.append("<h2>DAPO iterations</h2>")
    if dapo:
        parts.append(f'<div class="wide">{iterations_table(rows)}</div>')
        parts.append(
            '<p class="note">Iteration N is the N-th (its row\'s <code>iteration</code> in '
            "metrics.jsonl is N − 1). Clip fractions, loss, gradient norm and entropy are means "
            "over the iteration's applied optimizer steps, the log-prob gap over its sampled "
            "tokens; tokens / s counts every trajectory token over the rollout's wall time.</p>"
        )
    else:
        parts.append("<p>No DAPO iteration yet.</p>")
    parts.append("<h2>Configuration</h2>")
    parts.append(_table("config", ("key", "value"), config_items(config)))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p) + "\n"


def images_of(paths: Sequence[str]) -> list[Image]:
    """The PNG files `write_plots` wrote, titled by their name."""
    images = []
    for path in paths:
        name = os.path.basename(path)
        with open(path, "rb") as f:
            images.append(Image(_IMAGE_TITLES.get(name, name), f.read()))
    return images


def write_report(path: str, rows: Sequence, config: Config, plots: Sequence[str] = ()) -> str:
    """Write the page to `path` (the PNG files `plots` embedded in it); returns `path`."""
    page = render_report(rows, config, images_of(plots))
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(path + ".tmp", path)  # a reader never sees half a page
    return path
