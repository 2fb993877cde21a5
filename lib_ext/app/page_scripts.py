"""Load the repository's `javascript/*.js` into the standalone app's page, as A1111 loads an extension's scripts.

gradio 3.41 has no `head=` parameter and runs no `<script>` put into a `gr.HTML`, so — like A1111's
`modules/ui_gradio_extensions.reload_javascript` — the page template's response is wrapped and the scripts are
inlined before `</head>`, sorted by file name (A1111's order). Works offline, and on gradio 4 too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

JS_DIR = Path(__file__).resolve().parents[2] / "javascript"
_MARK = "promptscope_page_scripts"


def scripts_html(files: Sequence[Path]) -> str:
    parts = []
    for f in sorted(files, key=lambda p: p.name):
        code = f.read_text(encoding="utf-8").replace("</script", "<\\/script")
        parts.append(f'<script type="text/javascript" data-promptscope="{f.name}">\n{code}\n</script>')
    return "\n".join(parts)


def install(js_dir: Path = JS_DIR) -> bool:
    """Wrap gradio's TemplateResponse once so every page load inlines the scripts in `js_dir` (re-read each time,
    so edits show on reload). Returns False when there is nothing to load or gradio has no template hook."""
    import gradio.routes

    templates = getattr(gradio.routes, "templates", None)
    if templates is None or not js_dir.is_dir():
        return False
    current = templates.TemplateResponse
    original = getattr(current, _MARK, current)

    def template_response(*args, **kwargs):
        res = original(*args, **kwargs)
        html = scripts_html(list(js_dir.glob("*.js")))
        res.body = res.body.replace(b"</head>", f"{html}</head>".encode())
        res.init_headers()
        return res

    setattr(template_response, _MARK, original)
    templates.TemplateResponse = template_response
    return True
