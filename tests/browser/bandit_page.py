"""Readers of the seed-bandit tab's page, shared by the standalone (tests/browser) and WebUI (tests/live) tests.

Each reads in one script: gradio replaces the nodes on every update, so a found element may be stale a moment later.
"""

from __future__ import annotations


def shown_image_id(driver, prefix: str) -> str:
    """The id of the image being rated ('' while none is shown). With the rating view running (the page script's,
    lib_ext/bandit/ui_fast.py): the image it shows, painted, once every rating and undo it queued has reached the
    server (so a test can read the API next); else the gradio caption's."""
    return driver.execute_script(
        "const v = window.promptscopeBanditView ? window.promptscopeBanditView() : null;"
        "if (v && v.on) { const img = v.shown && v.shown.img;"
        "  const settled = img && img.complete && !v.outbox.length && !v.sending && !v.fetching;"
        "  return settled ? String(v.shown.data.id) : ''; }"
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute('data-image-id') : '';",
        f"#{prefix}_caption [data-image-id]",
    )


def stats_rows(driver, prefix: str) -> list[list[str]]:
    """The statistics table's body rows, as cell texts (gradio 4 draws them in a virtual table, beside a hidden
    table that measures column widths with one row of the widest values)."""
    return driver.execute_script(
        "const root = document.querySelector(arguments[0]); if (!root) return [];"
        "const virtual = root.querySelector('svelte-virtual-table-viewport');"
        "return Array.from((virtual || root).querySelectorAll('tbody tr'))"
        ".map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim()))",
        f"#{prefix}_stats_table",
    )


def rater_box_value(driver, prefix: str) -> str | None:
    """The Rater box's text (None while it is not on the page)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.value : null;",
        f"#{prefix}_rater input, #{prefix}_rater textarea",
    )


def plot_drawn(driver, prefix: str, name: str) -> dict | None:
    """The size of what vega-embed drew in a gr.Plot (an altair chart: a canvas or svg), or None if nothing yet."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "if (!e) return null; const r = e.getBoundingClientRect();"
        "return r.width > 50 && r.height > 50 ? {width: r.width, height: r.height, tag: e.tagName} : null;",
        f"#{prefix}_{name} .vega-embed canvas, #{prefix}_{name} .vega-embed svg",
    )
