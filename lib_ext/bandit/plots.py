"""The tab's plots as altair (Vega-Lite) charts for `gr.Plot`: posterior densities, posterior mean by round, and
likes per 100 ratings by round (is the sweep learning?).

Why altair in `gr.Plot`: gradio 3.41 (A1111 v1.10.1) and 4.40 (Forge) both ship altair and both render an altair
chart returned to `gr.Plot` the same way (its Vega-Lite JSON, drawn by vega-embed in the page), so one chart works
on both hosts. The browser draws the text, so labels in any script show (a Japanese prompt label too — Pillow's
built-in font could only draw Latin-1), and the charts are interactive: hovering a curve highlights that arm and a
tooltip reads its value; clicking a legend entry keeps only that arm in view.

Each function takes the service's plain data (`posterior_curves`, `history`) and the arms' labels, and returns an
`alt.Chart` (or layered chart); the title names the view (pooled, or a rater's).

gradio 4.40 does not require altair (only matplotlib and pandas; `gr.LinePlot` needs altair too), so a Forge
install may lack it: then the same plots are matplotlib figures (static images; labels in a CJK font when one is
installed, e.g. Noto Sans CJK), which `gr.Plot` shows on both gradio versions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

try:
    import altair as alt
except ImportError:  # gradio 4 without altair: matplotlib figures instead
    alt = None

WIDTH, HEIGHT = 420, 240  # Vega-Lite view size; gr.Plot scales it to its container


def _view_name(view: Any) -> str:
    if view in (None, "pooled"):
        return "all raters"
    return "the unnamed rater" if view == "" else f"rater {view}"


def _hover(name: str) -> Any:
    """A selection of the arm nearest the pointer (altair 5: selection_point; altair 4: selection_single)."""
    if hasattr(alt, "selection_point"):
        return alt.selection_point(name=name, on="mouseover", nearest=True, fields=["arm"], empty=False)
    return alt.selection_single(
        name=name, on="mouseover", nearest=True, fields=["arm"], empty="none"
    )  # pragma: no cover


def _legend_pick(name: str) -> Any:
    if hasattr(alt, "selection_point"):
        return alt.selection_point(name=name, fields=["arm"], bind="legend")
    return alt.selection_multi(name=name, fields=["arm"], bind="legend")  # pragma: no cover


def _add_params(chart: Any, *params: Any) -> Any:
    return chart.add_params(*params) if hasattr(chart, "add_params") else chart.add_selection(*params)  # altair 4


def _round_x(rounds: Sequence[int]) -> Any:
    """An x axis of round numbers, not starting at zero: a tick per round while they are few, else whole-number
    ticks chosen by Vega (tickMinStep alone still gives 1.5 on a short axis)."""
    few = sorted(set(int(r) for r in rounds))
    axis = alt.Axis(values=few, format="d") if len(few) <= 12 else alt.Axis(tickMinStep=1, format="d")
    return alt.X("round:Q", title="round", axis=axis, scale=alt.Scale(zero=False))


def _arm_lines(df: pd.DataFrame, x: Any, y: str, x_title: str, y_title: str, title: str, tooltip: list, key: str):
    """One line per arm (colour by arm label, in the arms' order), a hovered arm drawn thicker with its points and
    a tooltip, the legend clickable. `x`: a field name (quantitative) or an `alt.X`."""
    order = list(dict.fromkeys(df["arm"])) if len(df) else []
    colour = alt.Color("arm:N", title="arm", sort=order, legend=alt.Legend(labelLimit=260, symbolType="stroke"))
    hover, pick = _hover(f"{key}_hover"), _legend_pick(f"{key}_legend")
    x_enc = alt.X(f"{x}:Q", title=x_title) if isinstance(x, str) else x
    base = alt.Chart(df).encode(x=x_enc, y=alt.Y(f"{y}:Q", title=y_title), color=colour)
    lines = base.mark_line().encode(
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
        strokeWidth=alt.condition(hover, alt.value(4), alt.value(2)),
    )
    points = base.mark_circle(size=70).encode(
        opacity=alt.condition(hover, alt.value(1.0), alt.value(0.0)), tooltip=tooltip
    )
    lines = _add_params(lines, pick)
    points = _add_params(points, hover)
    return alt.layer(lines, points).properties(title=title, width=WIDTH, height=HEIGHT)


# Fonts with Japanese/Chinese/Korean glyphs, tried after matplotlib's default (DejaVu Sans has none of them).
CJK_FONTS = ("Noto Sans CJK JP", "Noto Sans JP", "Source Han Sans JP", "IPAexGothic", "IPAGothic", "TakaoGothic",
             "VL Gothic", "Yu Gothic", "Meiryo", "MS Gothic", "Hiragino Sans", "Hiragino Kaku Gothic ProN",
             "Noto Sans CJK SC", "WenQuanYi Zen Hei", "Droid Sans Fallback", "Arial Unicode MS")  # fmt: skip


def _fallback_fonts() -> list[str]:
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(name for name in CJK_FONTS if name in have)]


def _mpl_figure(
    series: Sequence[tuple[str, Sequence[float], Sequence[float], str]],
    title: str,
    x_title: str,
    y_title: str,
    df: pd.DataFrame,
) -> Any:
    """A matplotlib figure (no pyplot: thread-safe) of (name, xs, ys, style) lines; style "line" or "dots".

    The rows drawn ride along as ``promptscope_rows``, so `chart_data` reads either backend's chart alike."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context({"font.family": _fallback_fonts(), "font.size": 9}):
        fig = Figure(figsize=(5.6, 3.2), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        for name, xs, ys, style in series:
            if style == "dots" or len(xs) == 1:
                ax.plot(xs, ys, "o", label=name, markersize=4)
            else:
                ax.plot(xs, ys, label=name, linewidth=2)
        ax.set_title(title)
        ax.set_xlabel(x_title)
        ax.set_ylabel(y_title)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no ratings yet", ha="center", va="center", transform=ax.transAxes, color="grey")
        fig.canvas.draw()  # lay the text out now, inside the font context
    fig.promptscope_rows = df.to_dict("records")
    return fig


def _mpl_arm_lines(df: pd.DataFrame, x: str, y: str, title: str, x_title: str, y_title: str) -> Any:
    series = [(arm, list(g[x]), list(g[y]), "line") for arm, g in df.groupby("arm", sort=False)]
    return _mpl_figure(series, title, x_title, y_title, df)


def density_chart(curves: Mapping[str, Any], labels: Mapping[int, str]) -> Any:
    """Posterior density of every arm's like-rate (`BanditService.posterior_curves`)."""
    xs = list(curves.get("x", []))
    step = max(1, len(xs) // 100)  # about 100 points per curve are enough to draw and hover
    rows = [
        {"arm": labels.get(int(a), f"arm {a}"), "arm_id": int(a), "like_rate": xs[i], "density": ys[i]}
        for a, ys in curves.get("arms", {}).items()
        for i in range(0, len(xs), step)
    ]
    df = pd.DataFrame(rows, columns=["arm", "arm_id", "like_rate", "density"])
    title = f"Posterior of each arm's like-rate ({_view_name(curves.get('view'))})"
    if alt is None:
        return _mpl_arm_lines(df, "like_rate", "density", title, "like-rate", "posterior density")
    tip = [alt.Tooltip("arm:N"), alt.Tooltip("like_rate:Q", format=".2f", title="like-rate"),
           alt.Tooltip("density:Q", format=".2f")]  # fmt: skip
    return _arm_lines(df, "like_rate", "density", "like-rate", "posterior density", title, tip, "density")


def history_chart(history: Mapping[str, Any], labels: Mapping[int, str]) -> Any:
    """Each arm's posterior mean after every round (`BanditService.history`)."""
    rows = []
    for r in history.get("rounds", []):
        for a, v in r["arms"].items():
            rows.append({"arm": labels.get(int(a), f"arm {a}"), "arm_id": int(a), "round": r["round"],
                         "mean": v["mean"], "likes": v["likes"], "dislikes": v["dislikes"]})  # fmt: skip
    df = pd.DataFrame(rows, columns=["arm", "arm_id", "round", "mean", "likes", "dislikes"])
    title = f"Posterior mean like-rate by round ({_view_name(history.get('view'))})"
    if alt is None:
        return _mpl_arm_lines(df, "round", "mean", title, "round", "posterior mean like-rate")
    tip = [alt.Tooltip("arm:N"), alt.Tooltip("round:Q"), alt.Tooltip("mean:Q", format=".3f", title="mean like-rate"),
           alt.Tooltip("likes:Q"), alt.Tooltip("dislikes:Q")]  # fmt: skip
    return _arm_lines(df, _round_x(df["round"]), "mean", "round", "posterior mean like-rate", title, tip, "history")


def likes_chart(history: Mapping[str, Any], window: int = 100) -> Any:
    """Likes per 100 ratings by round (`BanditService.history()["likes_per_100"]`): each round's own rate (dots)
    and over the latest `window` ratings (line). Rising: the sweep makes more of what is liked."""
    rows = []
    for p in history.get("likes_per_100", []):
        rows.append({"round": p["round"], "series": "this round", "per_100": p["per_100"], "likes": p["likes"],
                     "ratings": p["ratings"]})  # fmt: skip
        rows.append({"round": p["round"], "series": f"latest {window} ratings", "per_100": p["window_per_100"],
                     "likes": round(p["window_per_100"] * p["window"] / 100), "ratings": p["window"]})  # fmt: skip
    df = pd.DataFrame(rows, columns=["round", "series", "per_100", "likes", "ratings"])
    title = f"Is the sweep learning? Likes per 100 ratings ({_view_name(history.get('view'))})"
    if alt is None:
        series = [(name, list(g["round"]), list(g["per_100"]), "dots" if name == "this round" else "line")
                  for name, g in df.groupby("series", sort=False)]  # fmt: skip
        return _mpl_figure(series, title, "round", "likes per 100 ratings", df)
    tip = [alt.Tooltip("series:N"), alt.Tooltip("round:Q"), alt.Tooltip("per_100:Q", format=".1f",
           title="likes per 100"), alt.Tooltip("likes:Q"), alt.Tooltip("ratings:Q")]  # fmt: skip
    colour = alt.Color("series:N", title="", sort=["this round", f"latest {window} ratings"],
                       scale=alt.Scale(range=["#9e9e9e", "#d62728"]))  # fmt: skip
    base = alt.Chart(df).encode(
        x=_round_x(df["round"]), y=alt.Y("per_100:Q", title="likes per 100 ratings"), color=colour,
        tooltip=tip,
    )  # fmt: skip
    dots = base.transform_filter(alt.datum.series == "this round").mark_circle(size=45)
    line = base.transform_filter(alt.datum.series != "this round").mark_line(point=True, strokeWidth=3)
    return alt.layer(dots, line).properties(title=title, width=WIDTH, height=HEIGHT)


def chart_data(chart: Any) -> list[dict[str, Any]]:
    """The rows a chart draws, altair or matplotlib (tests read them)."""
    if not hasattr(chart, "to_dict"):
        return list(chart.promptscope_rows)
    spec = chart.to_dict()
    datasets = spec.get("datasets", {})
    return [row for rows in datasets.values() for row in rows]
