"""The run's pictures and its one-page report.html: what is drawn from which rows, the summary
numbers, and the page as a person sees it in a real headless browser (Chromium, which
tools/setup.sh installs): its title, its tables' numbers, and every plot decoded and shown."""

import dataclasses
import html
import json
import math
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from swejax import plots, report
from swejax.config import load_config
from swejax.run import (
    DapoRow,
    EvalRow,
    PassMetrics,
    RftRow,
    RolloutSummary,
    row_from_dict,
    row_to_dict,
)

BLUE = (0x1F, 0x77, 0xB4)  # the first color of every plot (plots.COLORS[0])


def _rollout(trajectories, reward, pass_rate, submits, turns, tokens):
    return RolloutSummary(trajectories, 0, reward, pass_rate, submits, turns, tokens, 0.25)


def _dapo(iteration, **values) -> DapoRow:
    """A DAPO row of a small run; a field this test does not know (one added since) is 0."""
    known = {
        "iteration": iteration,
        "rollout": _rollout(
            16, -0.2 + 0.1 * iteration, 0.1 * iteration, 4 + iteration, 6.0, 24_000
        ),
        "filtered_fraction": 0.25,
        "optimizer_steps": 2,
        "skipped_steps": 0,
        "idle_fraction": 0.3,
        "logprob_gap_mean": 1e-7 * (iteration + 1),
        "logprob_gap_max": 2e-6 * (iteration + 1),
        "seconds": 40.0,
        "rollout_s": 30.0,
        "recompute_s": 0.0,
        "train_s": 9.0,
        "loss": 0.1 / (iteration + 1),
        "grad_norm": 0.5,
        "entropy": 1.2,
        "clip_low": 0.01 * iteration,
        "clip_high": 0.02,
        "fill_ratio": 0.7,
        **values,
    }
    names = {f.name for f in dataclasses.fields(DapoRow)}
    return DapoRow(
        **{k: v for k, v in known.items() if k in names}, **dict.fromkeys(names - set(known), 0.0)
    )


def _eval(index, stage, iterations, pass_at_1, stderr, pass_at_k) -> EvalRow:
    return EvalRow(
        index,
        stage,
        iterations,
        PassMetrics(8, pass_at_1, stderr, pass_at_k),
        _rollout(32, 0.0, pass_at_1, 8 + index, 5.5, 50_000),
        60.0,
    )


def _run_rows() -> list:
    """A small run's metrics (evaluate, RFT, evaluate, 4 DAPO iterations evaluated every 2),
    as metrics.jsonl holds them and reads them back."""
    rows = [
        _eval(0, "initial", 0, 0.0, 0.0, 0.0),
        RftRow(4, 4, 60, 2.1, 0.4, 0.8, 90.0),
        _eval(1, "rft", 0, 0.5, 0.09, 0.75),
        _dapo(0),
        _dapo(1),
        _eval(2, "dapo", 2, 0.625, 0.08, 0.875),
        _dapo(2),
        _dapo(3),
        _eval(3, "dapo", 4, 0.8125, 0.07, 1.0),
    ]
    return [row_from_dict(json.loads(json.dumps(row_to_dict(row)))) for row in rows]


def _config(name="tiny-demo"):
    return load_config(None, [f"name={name}", "dapo.iterations=4", "eval.every=2", "eval.runs=8"])


@dataclasses.dataclass(frozen=True)
class _OldDapoRow:
    """A DAPO row of a run written before a field existed: only some of today's fields."""

    KIND = "dapo"
    iteration: int
    rollout: RolloutSummary
    rollout_s: float
    loss: float


# ---- what is drawn and computed (no browser) ----


def test_the_change_in_pass_at_1_has_the_standard_error_of_a_difference():
    lines = report.evaluation_lines(_run_rows())
    assert [line.stage for line in lines] == [
        "initial",
        "after RFT",
        "after iteration 2",
        "after iteration 4",
    ]
    assert lines[0].change is None
    change = lines[3].change
    assert change.value == pytest.approx(0.1875)
    assert change.stderr == pytest.approx(math.sqrt(0.08**2 + 0.07**2))


def test_tokens_per_second_are_the_rollout_tokens_over_its_seconds():
    row = _dapo(0, rollout_s=12.0)
    assert plots.TOKENS_PER_SECOND.of(row) == pytest.approx(24_000 / 12.0)
    assert plots.TOKENS_PER_SECOND.of(_dapo(0, rollout_s=0.0)) is None


def test_the_training_panels_are_the_papers_and_evaluations_sit_at_iterations_done():
    charts = plots.training_charts(_run_rows())
    assert [c.title for c in charts] == [
        "Pass@1 (± standard error)",
        "Pass@8 (8 runs per task)",
        "Submits",
        "Mean turns",
    ]
    pass_at_1 = charts[0].series[0]
    assert pass_at_1.errors == (0.0, 0.09, 0.08, 0.07)
    initial, rft, *dapo = pass_at_1.x
    assert initial < 0 < rft < 1 and dapo == [2, 4]  # either side of 0, then iterations done
    assert charts[2].series[0].x == (1, 2, 3, 4)  # a DAPO row at its iteration + 1


def test_a_panel_is_drawn_only_for_fields_the_rows_have():
    old = [_OldDapoRow(i, _rollout(16, 0.0, 0.0, 1, 5.0, 1000), 10.0, 0.5) for i in range(3)]
    drawn = [c.title for c in plots.diagnostic_charts(old)]
    assert drawn == ["Reward", "Pass rate", "Loss", "Rollout throughput"]
    assert [m.header for m in report.iteration_columns(old)] == [
        "trajectories",
        "submits",
        "mean turns",
        "tokens",
        "reward",
        "pass rate",
        "loss",
        "rollout s",
        "tokens / s",
    ]
    titles = [c.title for c in plots.diagnostic_charts(_run_rows())]
    for title in ("Reward", "Pass rate", "PPO clipping", "Sampler vs trainer log-prob gap"):
        assert title in titles
    for title in ("Loss", "Rollout throughput", "Accelerator idle"):
        assert title in titles
    fields = {f.name for f in dataclasses.fields(DapoRow)}
    assert ("Positive advantages" in titles) == ("advantage_positive" in fields)


def test_grids_are_at_most_four_panels_wide():
    assert [plots.grid_shape(n) for n in (1, 2, 4, 5, 10, 12)] == [
        (1, 1),
        (1, 2),
        (2, 2),
        (2, 3),
        (3, 4),
        (3, 4),
    ]


def test_the_page_escapes_text_and_needs_no_script_or_other_file():
    page = report.render_report(_run_rows(), _config("a<b>&c"))
    assert "<title>swejax run a&lt;b&gt;&amp;c</title>" in page
    assert "a<b>" not in page
    assert "<script" not in page.lower()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in sources), sources


def test_a_run_without_rows_still_gets_a_page():
    page = report.render_report([], _config())
    assert "No evaluation yet." in page and "No DAPO iteration yet." in page
    assert plots.write_plots([], "/nonexistent") == []  # nothing to draw: no file


# ---- the page in a headless browser ----


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI") and not os.environ.get("SWEJAX_NO_CHROMIUM"):
        raise RuntimeError("CI must install Chromium (tools/setup.sh; SWEJAX_NO_CHROMIUM=1 skips)")
    pytest.skip("Chromium is not installed (tools/setup.sh installs it)")


def _browse(tmp_path, url: str, *args: str) -> str:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",  # its own: tests run in parallel
        *args,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# Added to a copy of the page (the page itself has no script): once every image has loaded
# or failed, what a reader sees, as JSON in a <pre id="probe">.
_PROBE = """<script>
window.addEventListener("load", () => {
  const seen = {
    title: document.title,
    heading: document.querySelector("h1").innerText,
    images: [...document.images].map((i) => ({
      alt: i.alt, complete: i.complete, natural: [i.naturalWidth, i.naturalHeight],
      shown: [i.getBoundingClientRect().width, i.getBoundingClientRect().height],
    })),
    tables: Object.fromEntries([...document.querySelectorAll("table")].map(
      (t) => [t.id, [...t.rows].map((r) => [...r.cells].map((c) => c.innerText))])),
  };
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify(seen);
  document.body.appendChild(probe);
});
</script>"""


def _seen(tmp_path, page_path) -> dict:
    """What the browser shows of the page at `page_path`."""
    with open(page_path, encoding="utf-8") as f:
        page = f.read()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    dom = _browse(tmp_path, probed.as_uri(), "--dump-dom")
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert match, "the page did not finish loading: " + dom[-2000:]
    return json.loads(html.unescape(match.group(1)))


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def _assert_images_shown(seen, pngs):
    assert len(seen["images"]) == len(pngs)
    for image, png in zip(seen["images"], pngs, strict=True):
        assert image["complete"] and image["natural"] == list(_png_size(png)), image
        assert min(image["shown"]) > 100, image  # on the page, not a broken-image icon


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A small run's plots and report.html, as the end of a run writes them."""
    directory = tmp_path_factory.mktemp("run")
    rows = _run_rows()
    pngs = plots.write_plots(rows, str(directory))
    page = report.write_report(str(directory / "report.html"), rows, _config(), pngs)
    return rows, pngs, page


def test_the_report_in_a_browser_shows_its_title_tables_and_every_plot(written, tmp_path):
    rows, pngs, page = written
    assert [os.path.basename(p) for p in pngs] == ["training.png", "diagnostics.png"]
    seen = _seen(tmp_path, page)
    assert seen["title"] == seen["heading"] == "swejax run tiny-demo"
    header, *evaluations = seen["tables"]["evaluations"]
    assert header[2:4] == ["Pass@1 ± stderr", "Pass@8"]
    assert [line[0] for line in evaluations] == [
        "initial",
        "after RFT",
        "after iteration 2",
        "after iteration 4",
    ]
    assert evaluations[1][2:5] == ["0.500 ± 0.090", "0.750", "9 of 32"]
    assert evaluations[3][6] == f"+0.188 ± {math.hypot(0.08, 0.07):.3f}"
    header, *iterations = seen["tables"]["iterations"]
    assert [line[0] for line in iterations] == ["1", "2", "3", "4"]
    assert iterations[0][header.index("tokens / s")] == "800"  # 24,000 tokens in 30 s
    config = dict(seen["tables"]["config"][1:])
    assert config["model.preset"] == "tiny" and config["dapo.iterations"] == "4"
    assert [i["alt"] for i in seen["images"]] == ["Training curves", "DAPO diagnostics"]
    _assert_images_shown(seen, pngs)


def test_the_browser_check_catches_a_broken_image(written, tmp_path):
    _, pngs, page = written
    with open(page, encoding="utf-8") as f:
        text = f.read()
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace("base64,iVBOR", "base64,AAAAA", 1), encoding="utf-8")
    seen = _seen(tmp_path, broken)
    assert seen["images"][0]["natural"] == [0, 0]
    with pytest.raises(AssertionError):
        _assert_images_shown(seen, pngs)


def test_a_screenshot_of_the_report_shows_the_plots_colors(written, tmp_path):
    from PIL import Image

    _, _, page = written
    shot = tmp_path / "shot.png"
    _browse(tmp_path, Path(page).as_uri(), f"--screenshot={shot}", "--window-size=1400,2000")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    not_white = (pixels.min(axis=-1) < 200).mean()
    blue = (np.abs(pixels - BLUE).max(axis=-1) < 30).mean()
    assert not_white > 0.02, f"the page looks blank: {not_white:.3f} of it is not white"
    assert blue > 0.0005, f"no plot lines to see: {blue:.4f} of the page is the plots' blue"
