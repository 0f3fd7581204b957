"""report.html stands alone: it parses, has the metrics table, and embeds its plots as valid PNGs."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from unlearnkit.report.html import render, write_html


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.cells, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("link", "script") or (tag == "img" and not attrs["src"].startswith("data:")):
            self.links.append(attrs)

    def handle_data(self, data):
        self.cells.append(data.strip())


def sample_report() -> dict:
    before = {"forget_prob": 0.99, "forget_quality": 2.7e-4, "model_utility": 0.92}
    after = {"forget_prob": 0.01, "forget_quality": 0.5, "model_utility": 0.9}
    return {"method": "npo", "benchmark": "world", "model": "world:target", "before": before, "after": after,
            "train": {"steps": 3, "trainable_params": 10, "total_params": 100, "seconds": 1.0},
            "trainable_fraction": 0.1, "timings": {"total": 2.0},
            "robustness": {"metrics": ["forget_prob"], "unlearned": {"forget_prob": 0.01},
                           "rows": [{"attack": "relearn", "label": "relearned (10 forget rows)",
                                     "metrics": {"forget_prob": 0.5}, "forgetting_kept": {"forget_prob": 0.5},
                                     "curve": [{"step": 0, "forget_prob": 0.01}, {"step": 5, "forget_prob": 0.3},
                                               {"step": 10, "forget_prob": 0.5}]}],
                           "worst_case": {"metrics": {"forget_prob": 0.5}, "forgetting_kept": {"forget_prob": 0.5},
                                          "attack": {"forget_prob": "relearned (10 forget rows)"}}},
            "guard": {"decision": "accepted", "stage": None, "reasons": []},
            "per_sample": {name: {"logit_lens": {"layer": [0, 1, 2], "forget_logit_lens_by_layer": values}}
                           for name, values in (("before", [0.3, 0.6, 0.99]), ("after", [0.3, 0.2, 0.01]))}}


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def test_page_has_the_table_and_embeds_valid_pngs(tmp_path):
    from matplotlib.image import imread

    (tmp_path / "train_log.jsonl").write_text("\n".join(json.dumps({"step": i, "loss": 1.0 / i, "forget": 2.0 / i})
                                                        for i in range(1, 6)))
    path = write_html(sample_report(), tmp_path)
    page = parse(path.read_text())
    assert page.tags[0] == "html" and "table" in page.tags
    assert "relearned (10 forget rows)" in page.cells and "worst case" in page.cells and "forget probability" in page.cells
    assert len(page.images) == 4 and not page.links  # losses, trade-off, recovery, logit lens; nothing from outside
    for src in page.images:
        header, data = src.split(",", 1)
        assert header == "data:image/png;base64"
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and imread(io.BytesIO(raw)).shape[0] > 100


CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
# after load, the page records each image's decoded width (0 = broken) on <body data-decoded="...">
PROBE = ('<script>addEventListener("load", () => document.body.setAttribute("data-decoded", Array.from('
         'document.images).map(i => i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0).join(",")))</script>')


def headless(tmp_path, *args: str) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (.ci/run installs Debian's chromium)")
def test_page_renders_in_headless_chromium(tmp_path):
    """The browser decodes every embedded plot and paints the table and the plots (colour, not a blank page)."""
    from matplotlib.image import imread

    (tmp_path / "train_log.jsonl").write_text("\n".join(json.dumps({"step": i, "loss": 1.0 / i}) for i in range(1, 6)))
    page = write_html(sample_report(), tmp_path)
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = headless(tmp_path, "--dump-dom", probed.as_uri())
    decoded = re.search(r'data-decoded="([^"]*)"', dom)
    assert decoded, "the load handler did not run: the page did not finish loading"
    widths = [int(w) for w in decoded.group(1).split(",")]
    assert len(widths) == 4 and min(widths) > 100  # loss curves, trade-off, recovery curve, logit lens: all decoded
    shot = tmp_path / "shot.png"
    headless(tmp_path, f"--screenshot={shot}", "--window-size=1000,1600", page.as_uri())
    pixels = imread(str(shot))[..., :3]
    assert (pixels.min(axis=-1) < 0.9).mean() > 0.01  # text, rules and plots, not an empty page
    assert (pixels.max(axis=-1) - pixels.min(axis=-1) > 0.3).sum() > 200  # coloured plot marks


def test_page_without_training_or_plots_still_renders():
    report = sample_report()
    report.update(train=None, after=None, robustness=None, per_sample=None,
                  guard={"decision": "rejected", "stage": "screen", "reasons": ["flagged <3> requests"]})
    page = parse(render(report, []))
    assert not page.images and "flagged <3> requests" in page.cells  # escaped text, not markup
    assert "Guard: rejected at the screen stage" in page.cells


@pytest.mark.usefixtures("isolated_env")
def test_unlearn_run_writes_report_html(tmp_path):
    from unlearnkit.pipeline import run
    from unlearnkit.recipe import load_recipe

    run(load_recipe("default", ["world.size=small", "train.steps=2"]), tmp_path / "r", progress=False,
        log=lambda message: None)
    page = parse((tmp_path / "r" / "report.html").read_text())
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
