"""The tab's two plots drawn with Pillow (no matplotlib at runtime): posterior densities and like-rate history.

Both take the service's plain data (`posterior_curves`, `history`) and arm labels, and return an RGB PIL image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
_MARGIN = (46, 14, 14, 34)  # left, top, right, bottom (pixels)


def colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


class _SafeDraw:
    """ImageDraw whose text() survives any label: Pillow's built-in bitmap font only has Latin-1 glyphs."""

    def __init__(self, draw: ImageDraw.ImageDraw):
        self._draw = draw

    def text(self, xy: Any, text: str, **kw: Any) -> None:
        self._draw.text(xy, text.replace("…", "...").encode("latin-1", "replace").decode("latin-1"), **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._draw, name)


class _Axes:
    """A plot area mapping data (x0..x1, y0..y1) to pixels, with ticks, grid and a legend."""

    def __init__(self, size: tuple[int, int], x: tuple[float, float], y: tuple[float, float], title: str):
        self.img = Image.new("RGB", size, (255, 255, 255))
        self.draw = _SafeDraw(ImageDraw.Draw(self.img))
        self.font = ImageFont.load_default()
        self.x0, self.x1 = x
        self.y0, self.y1 = y if y[1] > y[0] else (y[0], y[0] + 1.0)
        left, top, right, bottom = _MARGIN
        self.box = (left, top + 10, size[0] - right, size[1] - bottom)
        self.draw.text((left, 2), title, fill=(0, 0, 0), font=self.font)

    def px(self, x: float, y: float) -> tuple[float, float]:
        left, t, r, b = self.box
        fx = (x - self.x0) / (self.x1 - self.x0) if self.x1 != self.x0 else 0.5
        fy = (y - self.y0) / (self.y1 - self.y0)
        return left + fx * (r - left), b - min(max(fy, 0.0), 1.0) * (b - t)

    def frame(self, xticks: Sequence[float], yticks: Sequence[float], xfmt: str, yfmt: str, xlabel: str) -> None:
        left, t, r, b = self.box
        for v in yticks:
            _, py = self.px(self.x0, v)
            self.draw.line([(left, py), (r, py)], fill=(230, 230, 230))
            self.draw.text((2, py - 5), format(v, yfmt), fill=(80, 80, 80), font=self.font)
        for v in xticks:
            px, _ = self.px(v, self.y0)
            self.draw.line([(px, b), (px, b + 3)], fill=(80, 80, 80))
            text = format(v, xfmt)
            self.draw.text((px - 3 * len(text), b + 5), text, fill=(80, 80, 80), font=self.font)
        self.draw.rectangle([left, t, r, b], outline=(120, 120, 120))
        self.draw.text(((left + r) / 2 - 3 * len(xlabel), b + 18), xlabel, fill=(60, 60, 60), font=self.font)

    def line(self, xs: Sequence[float], ys: Sequence[float], fill: tuple[int, int, int], width: int = 2) -> None:
        pts = [self.px(x, y) for x, y in zip(xs, ys)]
        if len(pts) == 1:
            x, y = pts[0]
            self.draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=fill)
        elif pts:
            self.draw.line(pts, fill=fill, width=width)

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
        left, t, r, _b = self.box
        y = t + 4
        width = max((len(name) for name, _c in entries), default=0) * 6 + 22
        x = max(left + 4, r - width - 4)
        for name, fill in entries[:12]:
            self.draw.rectangle([x, y + 3, x + 12, y + 7], fill=fill)
            self.draw.text((x + 16, y), name, fill=(0, 0, 0), font=self.font)
            y += 12


def _arm_colour(arm_id: int, labels: Mapping[int, str]) -> tuple[int, int, int]:
    """The same colour for an arm in both plots: its position among the labelled arms."""
    order = list(labels)
    return colour(order.index(arm_id) if arm_id in labels else len(order) + arm_id)


def _short(label: str, n: int = 28) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def density_plot(
    curves: Mapping[str, Any], labels: Mapping[int, str], size: tuple[int, int] = (560, 300)
) -> Image.Image:
    """Posterior density of every arm's like-rate (`BanditService.posterior_curves`)."""
    xs = list(curves.get("x", []))
    arms = {int(k): list(v) for k, v in curves.get("arms", {}).items()}
    ymax = max((max(v) for v in arms.values() if v), default=1.0)
    ymax = max(ymax * 1.05, 1e-6)
    ax = _Axes(size, (0.0, 1.0), (0.0, ymax), "Posterior of each arm's like-rate")
    step = _nice_step(ymax / 4)
    ax.frame([i / 5 for i in range(6)], _ticks(0, ymax, step), ".1f", ".3g" if step < 1 else ".0f", "like-rate")
    entries = []
    for arm_id, ys in sorted(arms.items()):
        c = _arm_colour(arm_id, labels)
        ax.line(xs, ys, c)
        entries.append((_short(labels.get(arm_id, f"arm {arm_id}")), c))
    ax.legend(entries)
    return ax.img


def history_plot(
    history: Mapping[str, Any], labels: Mapping[int, str], size: tuple[int, int] = (560, 300)
) -> Image.Image:
    """Each arm's posterior mean after every round (`BanditService.history`)."""
    rounds = list(history.get("rounds", []))
    numbers = [r["round"] for r in rounds]
    x0, x1 = (min(numbers), max(numbers)) if numbers else (0, 1)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    ax = _Axes(size, (x0, x1), (0.0, 1.0), "Posterior mean like-rate by round (rated images)")
    step = max(1, int(_nice_step((x1 - x0) / 6)))
    xticks = [v for v in range(int(round(x0)), int(round(x1)) + 1, step) if x0 <= v <= x1]
    ax.frame(xticks, [0, 0.25, 0.5, 0.75, 1.0], "d", ".2f", "round")
    arm_ids = sorted({int(a) for r in rounds for a in r["arms"]} | set(labels))
    entries = []
    for arm_id in arm_ids:
        pts = [(r["round"], r["arms"][arm_id]["mean"]) for r in rounds if arm_id in r["arms"]]
        c = _arm_colour(arm_id, labels)
        if pts:
            ax.line([p[0] for p in pts], [p[1] for p in pts], c)
        entries.append((_short(labels.get(arm_id, f"arm {arm_id}")), c))
    if not rounds:
        ax.draw.text((ax.box[0] + 8, ax.box[3] - 20), "no ratings yet", fill=(120, 120, 120), font=ax.font)
    ax.legend(entries)
    return ax.img


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    import math

    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    out, v = [], lo
    while v <= hi + 1e-12 and len(out) < 50:
        out.append(round(v, 10))
        v += step
    return out
