"""The standalone app's page: a txt2img panel on the toy host, plus the features' panels and tabs.

gradio 3.41.2 API only, restricted to what gradio 4 also has (no `gr.Box`, no `.style()`, no `Component.update`,
no `_js`), so that the same UI code runs in A1111 and in Forge. Fonts are the system's: the default theme would
ask Google Fonts for "Source Sans Pro", which an offline machine cannot reach.
"""

from __future__ import annotations

import html
import inspect
import logging
from typing import Any

import gradio as gr

from ..toyworld.host import BEST_CFG, BEST_SAMPLER, SAMPLER_NAMES, ToyHost, ToyProcessed
from .panels import PanelRegistry, TabContext, Txt2ImgContext, Txt2ImgPanel, discover

log = logging.getLogger("promptscope")

DISPLAY_SIZE = 256  # 32×32 images are shown 8× larger, nearest neighbour
CSS = """
#ps_gallery img { image-rendering: pixelated; }
#ps_status { min-height: 1.5em; }
"""


def offline_theme() -> Any:
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
    )


def upscale(image: Any, size: int = DISPLAY_SIZE) -> Any:
    from PIL import Image

    if image.size[0] >= size:
        return image
    factor = max(1, size // image.size[0])
    return image.resize((image.size[0] * factor, image.size[1] * factor), Image.NEAREST)


def gallery_items(processed: ToyProcessed) -> list[Any]:
    """The gallery's value: the generated images, then attached ones (heatmap grids) as (image, caption) pairs with
    their infotext as caption, as A1111 shows extra images; all upscaled for display."""
    n = processed.n_generated
    items: list[Any] = [upscale(im) for im in processed.images[:n]]
    for i in range(n, len(processed.images)):
        caption = processed.infotexts[i] if i < len(processed.infotexts) else ""
        items.append((upscale(processed.images[i]), caption))
    return items


def _status(processed: ToyProcessed | None, error: str | None = None) -> str:
    if error:
        return f"<span class='ps-error'>Error: {html.escape(error)}</span>"
    if processed is None:
        return ""
    parts = [html.escape(m) for m in processed.messages]
    return "<br>".join(parts)


def build_app(host: ToyHost, registry: PanelRegistry | None = None, data_dir: Any = None) -> gr.Blocks:
    """The page; tabs' `app_hooks` are left on `demo.promptscope_app_hooks` for `main` to run after launch, their
    `close_hooks` on `demo.promptscope_close_hooks` for when it stops."""
    from .page_scripts import install as install_page_scripts

    registry = discover() if registry is None else registry
    install_page_scripts()  # the repository's javascript/*.js (keyboard shortcuts), as A1111 loads them
    from .sdapi import make_router as sdapi_router

    # A worker WebUI's API subset (POST /sdapi/v1/txt2img), so this app can be a seed-bandit worker.
    app_hooks: list[Any] = [lambda _demo, app: app.include_router(sdapi_router(host))]
    close_hooks: list[Any] = []
    with gr.Blocks(title="PromptScope", theme=offline_theme(), css=CSS, analytics_enabled=False) as demo:
        gr.Markdown(f"## PromptScope · standalone app · model `{host.model_name}`")
        with gr.Tabs():
            with gr.Tab("txt2img", id="txt2img"):
                _txt2img_tab(host, registry)
            for reg in registry.of_kind("tab"):
                with gr.Tab(reg.title, id=f"ps_tab_{reg.name}"):
                    try:
                        ctx = TabContext(host=host, data_dir=data_dir, app_hooks=app_hooks, close_hooks=close_hooks)
                        reg.build(ctx)
                    except Exception:
                        log.exception("PromptScope: tab %s failed to build", reg.name)
                        gr.Markdown(f"The {html.escape(reg.title)} tab failed to load; see the console.")
    demo.promptscope_app_hooks = app_hooks
    demo.promptscope_close_hooks = close_hooks
    return demo


def _txt2img_tab(host: ToyHost, registry: PanelRegistry) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(
                label="Prompt", lines=3, elem_id="ps_prompt", placeholder="a red circle and a blue square"
            )
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="ps_negative_prompt")
            with gr.Row():
                sampler = gr.Dropdown(
                    choices=list(SAMPLER_NAMES), value=BEST_SAMPLER, label="Sampling method", elem_id="ps_sampler"
                )
                steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id="ps_steps")
            with gr.Row():
                cfg = gr.Slider(1.0, 30.0, value=BEST_CFG, step=0.5, label="CFG Scale", elem_id="ps_cfg_scale")
                batch = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id="ps_batch_size")
            seed = gr.Number(label="Seed (-1: random)", value=-1, precision=0, elem_id="ps_seed")
            panels_box = gr.Column()
        with gr.Column(scale=1):
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="ps_generate")
                interrupt = gr.Button("Interrupt", elem_id="ps_interrupt")
            gallery = gr.Gallery(
                label="Output", elem_id="ps_gallery", columns=4, object_fit="contain", height="auto", preview=False
            )
            infotext = gr.Textbox(label="Generation info", lines=4, interactive=False, elem_id="ps_infotext")
            status = gr.HTML(elem_id="ps_status")
            infotexts_state = gr.State([])

    ctx = Txt2ImgContext(host, prompt, negative, seed, steps, cfg, sampler, batch, gallery, infotext)
    panels: list[tuple[str, Txt2ImgPanel]] = []
    with panels_box:
        for reg in registry.of_kind("txt2img"):
            try:
                panel = reg.build(ctx)
            except Exception:
                log.exception("PromptScope: txt2img panel %s failed to build", reg.name)
                continue
            if panel is not None:
                panels.append((reg.name, panel))
    extra_inputs = [c for _name, panel in panels for c in panel.inputs]

    run = make_generate(host, panels)

    generate.click(
        run,
        inputs=[prompt, negative, seed, steps, cfg, sampler, batch, *extra_inputs],
        outputs=[gallery, infotext, status, infotexts_state],
    )
    # Not queued, so that it runs while a generation holds the queue (as A1111's Interrupt button).
    interrupt.click(host.interrupt, inputs=None, outputs=None, queue=False)

    def show_infotext(texts: list[str], evt: gr.SelectData) -> str:
        index = evt.index if isinstance(evt.index, int) else 0
        return texts[index] if 0 <= index < len(texts) else ""

    gallery.select(show_infotext, inputs=[infotexts_state], outputs=[infotext])


def make_generate(host: ToyHost, panels: list[tuple[str, Txt2ImgPanel]]):
    """The Generate handler: the 7 base settings, every panel's input values in registration order, then a
    progress tracker (gradio fills it in; tests may pass None).

    gradio finds `gr.Progress` only among positional parameters, so with a variable number of panel inputs the
    handler declares its parameters through `__signature__` instead of `*values, progress=...`.
    """
    n_inputs = 7 + sum(len(panel.inputs) for _name, panel in panels)

    def run(*args: Any):
        if len(args) != n_inputs + 1:
            raise TypeError(f"the Generate handler takes {n_inputs} inputs and a progress tracker, got {len(args)}")
        prompt_v, negative_v, seed_v, steps_v, cfg_v, sampler_v, batch_v = args[:7]
        values, progress = args[7:n_inputs], args[n_inputs]
        features, afters, offset = [], [], 0
        try:
            for _name, panel in panels:
                n = len(panel.inputs)
                vals, offset = values[offset : offset + n], offset + n
                feature = panel.make_feature(*vals) if panel.make_feature is not None else None
                if feature is not None:
                    features.append(feature)
                afters.append((panel, feature))

            def report(done: int, total: int, message: str) -> None:
                if progress is not None:
                    progress((done, total), desc=message)

            processed = host.txt2img(
                prompt_v or "",
                negative_v or "",
                seed=int(seed_v if seed_v is not None else -1),
                steps=int(steps_v),
                cfg_scale=float(cfg_v),
                sampler_name=str(sampler_v),
                batch_size=int(batch_v),
                features=features,
                progress=report,
            )
            for panel, feature in afters:
                if panel.after is not None:
                    panel.after(host, processed, feature)
            if host.outdir is not None:  # --save: every generated image, with its infotext, as A1111 saves them
                for i in range(processed.n_generated):
                    host.save(processed.images[i], processed.infotexts[i], processed.seeds[i])
        except Exception as exc:  # show the error in the page, keep the app alive
            log.exception("PromptScope: generation failed")
            return [], "", _status(None, str(exc)), []
        return gallery_items(processed), processed.info, _status(processed), list(processed.infotexts)

    params = [inspect.Parameter(f"input_{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n_inputs)]
    params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()))
    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return run
