"""The tab's rating view: plain HTML that javascript/promptscope_bandit.js drives, so a rating costs no gradio
round-trip.

The page script keeps the next few images of the rater's queue loaded and decoded (`GET …/upcoming`), puts the
next one on show in the key press's own event handler and sends the rating afterwards (`POST …/rating`, in order,
retried until the server has it; the server stays the source of truth). Undo shows the undone image at once (it
is still loaded) and sends the undo after the ratings before it. When the ratings pause, the page presses the
hidden "sync" button: the statistics and the round's gallery are refreshed then, not per rating, so gradio's
re-rendering never holds up a key press. Until the script has started the view (or if it cannot), the tab's
gradio image and buttons rate as before; each image the tab shows through gradio (a session loaded, a round
made, a gallery pick, another rater) is taken over by the view.

Markup and CSS only: no gradio API, so it renders the same under gradio 3.41 and 4.40.
"""

from __future__ import annotations

import html

# The sync button's page-side step: the round and rater the rating view is on replace the hidden round box's value
# and the Rater's (inputs 1 and 3), so the gallery and statistics show where the user is.
SYNC_JS = "(...args) => (window.promptscopeBanditSync ? window.promptscopeBanditSync(args) : args)"


def fast_view_html(prefix: str, api: str) -> str:
    """The rating view's markup (hidden until the page script starts it): image frame, caption, big buttons."""
    p, api = html.escape(prefix, quote=True), html.escape(api, quote=True)

    def button(action: str, text: str, key: str, cls: str = "") -> str:
        return (
            f"<button type='button' class='ps-fast-btn ps-fast-{action} {cls}' data-action='{action}' "
            f"id='{p}_fast_{action}'>{text} <kbd>{key}</kbd></button>"
        )

    return (
        f"<div class='ps-fast' data-api='{api}' data-prefix='{p}'>"
        f"<div class='ps-fast-frame' id='{p}_fast_frame'></div>"
        f"<div class='ps-fast-caption ps-caption' id='{p}_fast_caption' data-image-id=''>Choose a session above.</div>"
        "<div class='ps-fast-bar'>"
        "<div class='ps-fast-main'>"
        + button("dislike", "👎 Dislike", "D / ←")
        + button("skip", "Skip", "S / ↓")
        + button("like", "👍 Like", "L / →", "ps-fast-primary")
        + "</div><div class='ps-fast-more'>"
        + button("undo", "↶ Undo", "U")
        + button("mark", "Mark the rest of the round as bad", "")
        + f"</div></div><div class='ps-fast-status' id='{p}_fast_status' aria-live='polite'></div>"
        f"<div class='ps-fast-attached' id='{p}_fast_attached'></div></div>"
    )


def fast_css(prefix: str, display_size: int) -> str:
    """Rules for the view (inside the tab's own <style>): while it runs (`ps-fast-on` on the tab), the gradio
    image, caption, buttons and heatmap gallery it replaces are hidden. Buttons stay at least 48 px tall (a
    finger); at phone width they fill the row and stick to the bottom of the screen."""
    r = f"#{prefix}"
    return f"""
{r} .ps-hidden {{ display: none !important; }}
{r} .ps-fast {{ display: none; }}
{r}.ps-fast-on .ps-fast {{ display: block; }}
{r}.ps-fast-on #{prefix}_current, {r}.ps-fast-on #{prefix}_caption, {r}.ps-fast-on #{prefix}_rate_row,
{r}.ps-fast-on #{prefix}_undo_row, {r}.ps-fast-on #{prefix}_attached {{ display: none !important; }}
{r} .ps-fast-frame {{ height: {int(display_size)}px; max-height: 70vh; display: flex; align-items: center;
  justify-content: center; background: #8881; border-radius: 6px; overflow: hidden; }}
{r} .ps-fast-frame img {{ width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }}
{r} .ps-fast-frame .ps-fast-empty {{ opacity: 0.7; padding: 1em; text-align: center; }}
{r} .ps-fast-caption {{ min-height: 3em; margin: 0.4em 0; }}
{r} .ps-fast-bar {{ display: flex; flex-direction: column; gap: 6px; }}
{r} .ps-fast-main, {r} .ps-fast-more {{ display: flex; gap: 6px; flex-wrap: wrap; }}
{r} .ps-fast-btn {{ flex: 1 1 0; min-height: 48px; min-width: 5em; padding: 6px 10px; border-radius: 8px;
  border: 1px solid #8886; background: #8882; color: inherit; font-size: 1.05em; cursor: pointer;
  touch-action: manipulation; }}
{r} .ps-fast-main .ps-fast-btn {{ min-height: 56px; font-size: 1.2em; }}
{r} .ps-fast-primary {{ background: #2e7d3240; border-color: #2e7d32; }}
{r} .ps-fast-dislike {{ border-color: #c62828; }}
{r} .ps-fast-btn kbd {{ opacity: 0.6; font-size: 0.75em; }}
{r} .ps-fast-status {{ min-height: 1.2em; font-size: 0.9em; }}
{r} .ps-fast-attached img {{ max-width: 100%; image-rendering: pixelated; }}
@media (max-width: 640px) {{
  {r} .ps-fast-frame {{ height: auto; aspect-ratio: 1 / 1; max-height: 60vh; }}
  {r} .ps-fast-bar {{ position: sticky; bottom: 0; z-index: 5; padding: 6px 0;
    background: var(--background-fill-primary, var(--body-background-fill, #fff)); }}
  {r} .ps-fast-main .ps-fast-btn {{ min-height: 64px; font-size: 1.3em; }}
  {r} .ps-fast-btn kbd {{ display: none; }}
}}
"""
