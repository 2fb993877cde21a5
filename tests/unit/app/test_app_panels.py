"""The standalone app without a browser: panel discovery, the page builds, the Generate handler, `--smoke`."""

from __future__ import annotations

import sys

import pytest

gr = pytest.importorskip("gradio")

from lib_ext.app import main as app_main  # noqa: E402
from lib_ext.app.panels import PanelRegistry, Txt2ImgPanel, discover  # noqa: E402
from lib_ext.app.ui import build_app, make_generate  # noqa: E402


class StepCounter:
    name = "counter"

    def __init__(self, label: str) -> None:
        self.label, self.steps = label, 0

    def begin_sampling(self, ctx) -> None:
        def hook(step):
            self.steps += 1

        ctx.step_hooks.append(hook)

    def end_sampling(self, ctx, ok: bool) -> None:
        pass


def test_discover_imports_panel_modules_in_order_and_skips_broken_ones(tmp_path, monkeypatch):
    pkg = tmp_path / "fake_app_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "panel_b.py").write_text(
        "def register(r):\n"
        "    r.tab('b', 'Bee', lambda ctx: None, order=5)\n"
        "    r.txt2img_panel('b', lambda ctx: None)\n"
    )
    (pkg / "panel_a.py").write_text("def register(r):\n    r.tab('a', 'Ay', lambda ctx: None, order=50)\n")
    (pkg / "panel_broken.py").write_text("raise ImportError('missing dependency')\n")
    (pkg / "helpers.py").write_text("raise AssertionError('not a panel: never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = discover(package="fake_app_pkg")
    assert [e.title for e in reg.of_kind("tab")] == ["Bee", "Ay"]
    assert [e.name for e in reg.of_kind("txt2img")] == ["b"]
    reg.tab("a", "Ay again", lambda ctx: None)  # same name and kind: replaced, not duplicated
    assert [e.title for e in reg.of_kind("tab")] == ["Bee", "Ay again"]


def test_page_builds_with_a_feature_panel_and_a_tab(host):
    built: dict[str, object] = {}
    reg = PanelRegistry()

    def panel(ctx):
        built["ctx"] = ctx
        with gr.Accordion("Counter", open=False):
            enabled = gr.Checkbox(label="Count steps", value=True)
        return Txt2ImgPanel(inputs=[enabled], make_feature=lambda on: StepCounter("x") if on else None)

    reg.txt2img_panel("counter", panel)
    reg.tab("jobs", "Jobs", lambda ctx: built.setdefault("tab_host", ctx.host))
    demo = build_app(host, reg)
    assert isinstance(demo, gr.Blocks)
    assert built["ctx"].host is host and built["tab_host"] is host
    assert built["ctx"].prompt.elem_id == "ps_prompt"


def test_generate_handler_runs_panels_features_and_after_hooks(host):
    counters: list[StepCounter] = []

    def make(label, on):
        if not on:
            return None
        counters.append(StepCounter(label))
        return counters[-1]

    def after(h, processed, feature):
        if feature is not None:
            h.add_infotext(processed, "Counted", feature.steps)
            h.attach_images(processed, [processed.images[0]])

    panels = [
        ("one", Txt2ImgPanel(inputs=["label", "on"], make_feature=make, after=after)),
        ("two", Txt2ImgPanel(inputs=["on"], make_feature=lambda on: make("two", on))),
    ]
    run = make_generate(host, panels)
    images, info, status, infotexts = run("a red circle", "", 5, 3, 7.0, "Euler", 2, "one", True, False, None)
    assert [c.label for c in counters] == ["one"] and counters[0].steps == 3
    assert len(images) == 3 and images[0].size == (256, 256)  # 2 generated + 1 attached, upscaled 8x
    assert info.startswith("a red circle\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 5,")
    assert info.endswith("Counted: 3") and "Seed: 6," in infotexts[1]
    assert status == ""


def test_generate_handler_gets_gradios_progress_tracker(host):
    from gradio.helpers import special_args

    panels = [("one", Txt2ImgPanel(inputs=["a", "b"], make_feature=lambda a, b: None))]
    run = make_generate(host, panels)
    inputs, progress_index, _ = special_args(run, list(range(9)))
    assert progress_index == 9 and isinstance(inputs[9], gr.Progress)
    calls = []

    class Tracker:
        def __call__(self, progress, desc=None):
            calls.append((progress, desc))

    run("red", "", 1, 2, 7.0, "Euler", 1, "a", "b", Tracker())
    assert calls == [((1, 2), "Step 1/2"), ((2, 2), "Step 2/2")]


def test_generate_handler_saves_when_the_host_has_an_outdir(host, tmp_path):
    from PIL import Image

    host.outdir = tmp_path
    make_generate(host, [])("red", "blue", 7, 2, 7.0, "Euler", 2, None)
    saved = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in saved] == ["00000-7.png", "00001-8.png"]
    assert Image.open(saved[1]).info["parameters"].startswith("red\nNegative prompt: blue\nSteps: 2")


def test_generate_handler_reports_errors_in_the_page(host):
    run = make_generate(host, [])
    images, info, status, _ = run("red", "", 1, 3, 7.0, "No such sampler", 1, None)
    assert images == [] and "Error: unknown sampler" in status


def test_smoke_flag_generates_one_image_and_exits(tmp_path, capsys):
    from PIL import Image

    code = app_main.main(
        ["--smoke", "--outdir", str(tmp_path), "--steps", "2", "--weights", str(tmp_path / "absent.safetensors")]
    )
    assert code == 0
    (png,) = tmp_path.glob("*.png")
    params = Image.open(png).info["parameters"]
    assert params.startswith("a red circle and a blue square\nSteps: 2, Sampler: Euler a, CFG scale: 3,")
    assert "saved" in capsys.readouterr().out


def test_module_entry_point_parses_defaults():
    args = app_main.parse_args([])
    assert (args.host, args.port, args.smoke) == ("127.0.0.1", 7860, False)
    assert "lib_ext.app.main" in sys.modules
