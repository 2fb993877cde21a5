"""Miniature of the WebUI's builtin ``scripts/xyz_grid.py`` ("X/Y/Z plot"): the axis registry extensions extend.

Extensions find this module through ``scripts.scripts_data`` (module named ``xyz_grid.py``) and append
``AxisOption`` objects to ``axis_options``. ``run`` takes the real 18 ``ui()`` arguments; it makes one
``process_images`` call per X/Y/Z cell (Z innermost-last, as the WebUI) and returns a grid plus the cell images.
No legends, sub-grids or CSV parsing.
"""

import copy

from modules import images, processing, scripts, sd_samplers, shared


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def apply_prompt(p, x, xs):
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise RuntimeError(f"Prompt S/R did not find {xs[0]} in prompt or negative prompt.")
    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)


def do_nothing(p, x, xs):
    pass


def format_value_add_label(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return x


def format_nothing(p, opt, x):
    return ""


class AxisOption:
    def __init__(
        self,
        label,
        type,
        apply,
        format_value=format_value_add_label,
        confirm=None,
        cost=0.0,
        choices=None,
        prepare=None,
    ):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value),
    AxisOptionTxt2Img(
        "Sampler",
        str,
        apply_field("sampler_name"),
        format_value=format_value,
        choices=lambda: [x.name for x in sd_samplers.samplers],
    ),
    AxisOptionImg2Img(
        "Sampler",
        str,
        apply_field("sampler_name"),
        format_value=format_value,
        choices=lambda: [x.name for x in sd_samplers.samplers_for_img2img],
    ),
]


def options_for(is_img2img):
    """The axis list shown in one tab; ``x_type`` etc. are indexes into it."""
    return [x for x in axis_options if type(x) is AxisOption or x.is_img2img == is_img2img]


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        import gradio as gr

        self.current_axis_options = options_for(is_img2img)
        labels = [x.label for x in self.current_axis_options]
        controls = []
        for axis in ("x", "y", "z"):
            controls += [
                gr.Dropdown(
                    label=f"{axis.upper()} type", choices=labels, value=labels[1 if axis == "x" else 0], type="index"
                ),
                gr.Textbox(label=f"{axis.upper()} values", value=""),
                gr.Dropdown(label=f"{axis.upper()} values", multiselect=True, choices=[], value=[]),
            ]
        flags = [
            "Draw legend",
            "Include Sub Images",
            "Include Sub Grids",
            "Keep -1 for seeds",
            "Vary seeds for X",
            "Vary seeds for Y",
            "Vary seeds for Z",
        ]
        controls += [gr.Checkbox(label=f, value=f == "Draw legend") for f in flags]
        controls += [
            gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2),
            gr.Checkbox(label="Use text inputs instead of dropdowns", value=False),
        ]
        return controls

    def run(
        self,
        p,
        x_type,
        x_values,
        x_values_dropdown,
        y_type,
        y_values,
        y_values_dropdown,
        z_type,
        z_values,
        z_values_dropdown,
        draw_legend,
        include_lone_images,
        include_sub_grids,
        no_fixed_seeds,
        vary_seeds_x,
        vary_seeds_y,
        vary_seeds_z,
        margin_size,
        csv_mode,
    ):
        if not no_fixed_seeds:
            processing.fix_seed(p)
        opts = getattr(self, "current_axis_options", None) or options_for(self.is_img2img)

        def values(opt, text, dropdown):
            if opt.label == "Nothing":
                return [0]
            if opt.choices is not None and not csv_mode:
                raw = list(dropdown)
            else:
                raw = [v.strip() for v in str(text).split(",") if v.strip()]
            return [opt.type(v) for v in raw]

        axes = [
            (opts[t], values(opts[t], v, d))
            for t, v, d in (
                (x_type, x_values, x_values_dropdown),
                (y_type, y_values, y_values_dropdown),
                (z_type, z_values, z_values_dropdown),
            )
        ]
        (x_opt, xs), (y_opt, ys), (z_opt, zs) = axes
        shared.state.job_count = len(xs) * len(ys) * len(zs) * p.n_iter

        cells, first = [], None
        for z in zs:
            for y in ys:
                for x in xs:
                    pc = copy.copy(p)
                    pc.styles = pc.styles[:]
                    pc.extra_generation_params = copy.copy(pc.extra_generation_params)
                    x_opt.apply(pc, x, xs)
                    y_opt.apply(pc, y, ys)
                    z_opt.apply(pc, z, zs)
                    res = processing.process_images(pc)
                    first = first or res
                    cells.append(res.images[res.index_of_first_image] if res.images else None)

        images_list = [c for c in cells if c is not None]
        grid = images.image_grid(images_list, rows=len(ys) * len(zs)) if images_list else None
        out = processing.Processed(
            p,
            ([grid] if grid else []) + (images_list if include_lone_images else []),
            first.seed if first else -1,
            first.info if first else "",
        )
        out.index_of_first_image = 1 if grid else 0
        return out
