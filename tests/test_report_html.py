"""report.html stands alone: it parses, has the metrics table, and embeds its plots as valid PNGs."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import pytest

from unlearnkit.report_html import render, write_html


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
            "relearn": {"metrics": {"forget_prob": 0.5, "forget_quality": 0.01, "model_utility": 0.9},
                        "forgetting_kept": {"forget_prob": 0.5}},
            "guard": {"decision": "accepted", "stage": None, "reasons": []}}


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
    assert "after relearning" in page.cells and "forget probability" in page.cells
    assert len(page.images) == 2 and not page.links  # loss curves + trade-off, nothing fetched from outside
    for src in page.images:
        header, data = src.split(",", 1)
        assert header == "data:image/png;base64"
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and imread(io.BytesIO(raw)).shape[0] > 100


def test_page_without_training_or_plots_still_renders():
    report = sample_report()
    report.update(train=None, after=None, relearn=None,
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
