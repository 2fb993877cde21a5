"""A1111 v1.10's built-in "Sampler" and "Seed" scripts (modules/processing_scripts, ScriptBuiltinUI) set p.steps,
p.sampler_name, p.scheduler and p.seed from their UI defaults in `setup` unless the job is an API job (p.is_api;
`setup_for_ui_only`). The seed bandit's jobs carry their own settings and seed: they must win."""

from __future__ import annotations

from PIL import Image

from tests.host.test_a1111_bandit import _session_with_arms, bandit, handler, tabs_blocks, webui  # noqa: F401


def test_builtin_ui_scripts_do_not_replace_the_jobs_steps_sampler_and_seed(webui, sd_model, tmp_path):  # noqa: F811
    m, _demo, _app = webui
    b = bandit(m)
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")

    class BuiltinLike(m.scripts.Script):  # as A1111's ScriptSampler + ScriptSeed with their UI defaults
        setup_for_ui_only = True

        def title(self):
            return "builtin-like"

        def show(self, is_img2img):
            return m.scripts.AlwaysVisible

        def setup(self, p, *args):
            p.steps, p.sampler_name, p.seed = 20, "DPM++ 2M", -1

    runner = m.scripts.scripts_txt2img
    script = BuiltinLike()
    script.args_from = script.args_to = 0
    runner.alwayson_scripts.insert(0, script)
    runner.scripts.insert(0, script)
    tab = b.current_tab
    value = _session_with_arms(tab, '{"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}')
    saved = []
    save_image = m.images.save_image
    m.images.save_image = lambda *a, **k: saved.append(a) or save_image(*a, **k)
    try:
        out = handler(tabs_blocks(m), tab.c["run"])(value, 2, None, False)
    finally:
        m.images.save_image = save_image
    assert "Round 1: 2 image(s)" in out[-1], out[-1]
    assert saved == []  # kept in the bandit's folder only, not a second copy in the WebUI's outputs
    for im in b.provider().images(1):
        params = m.infotext_utils.parse_generation_parameters(Image.open(im["path"]).info["parameters"])
        assert (int(params["Steps"]), params["Sampler"], int(params["Seed"])) == (2, "Euler", im["seed"]), params
