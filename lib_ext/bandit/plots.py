"""The tab's plots as altair (Vega-Lite) charts for `gr.Plot`: posterior densities, posterior mean by round, and
likes per 100 ratings by round (is the sweep learning?).

Why altair in `gr.Plot`: gradio 3.41 (A1111 v1.10.1) and 4.40 (Forge) both ship altair and both render an altair
chart returned to `gr.Plot` the same way (its Vega-Lite JSON, drawn by vega-embed in the page), so one chart works
on both hosts. The browser draws the text, so labels in any script show (a Japanese prompt label too — Pillow's
built-in font could only draw Latin-1), and the charts are interactive: hovering a curve highlights that arm and a
tooltip reads its value; clicking a legend entry keeps only that arm in view.

Each function takes the service's plain data (`posterior_curves`, `history`) and the arms' labels, and returns an
`alt.Chart` (or layered chart); the title names the view (pooled, or a rater's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import altair as alt
import pandas as pd

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


def _arm_lines(df: pd.DataFrame, x: str, y: str, x_title: str, y_title: str, title: str, tooltip: list, key: str):
    """One line per arm (colour by arm label, in the arms' order), a hovered arm drawn thicker with its points and
    a tooltip, the legend clickable."""
    order = list(dict.fromkeys(df["arm"])) if len(df) else []
    colour = alt.Color("arm:N", title="arm", sort=order, legend=alt.Legend(labelLimit=260, symbolType="stroke"))
    hover, pick = _hover(f"{key}_hover"), _legend_pick(f"{key}_legend")
    base = alt.Chart(df).encode(x=alt.X(f"{x}:Q", title=x_title), y=alt.Y(f"{y}:Q", title=y_title), color=colour)
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
    tip = [alt.Tooltip("arm:N"), alt.Tooltip("like_rate:Q", format=".2f", title="like-rate"),
           alt.Tooltip("density:Q", format=".2f")]  # fmt: skip
    title = f"Posterior of each arm's like-rate ({_view_name(curves.get('view'))})"
    return _arm_lines(df, "like_rate", "density", "like-rate", "posterior density", title, tip, "density")


def history_chart(history: Mapping[str, Any], labels: Mapping[int, str]) -> Any:
    """Each arm's posterior mean after every round (`BanditService.history`)."""
    rows = []
    for r in history.get("rounds", []):
        for a, v in r["arms"].items():
            rows.append({"arm": labels.get(int(a), f"arm {a}"), "arm_id": int(a), "round": r["round"],
                         "mean": v["mean"], "likes": v["likes"], "dislikes": v["dislikes"]})  # fmt: skip
    df = pd.DataFrame(rows, columns=["arm", "arm_id", "round", "mean", "likes", "dislikes"])
    tip = [alt.Tooltip("arm:N"), alt.Tooltip("round:Q"), alt.Tooltip("mean:Q", format=".3f", title="mean like-rate"),
           alt.Tooltip("likes:Q"), alt.Tooltip("dislikes:Q")]  # fmt: skip
    title = f"Posterior mean like-rate by round ({_view_name(history.get('view'))})"
    chart = _arm_lines(df, "round", "mean", "round", "posterior mean like-rate", title, tip, "history")
    return chart.configure_axisX(tickMinStep=1) if len(df) else chart


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
    tip = [alt.Tooltip("series:N"), alt.Tooltip("round:Q"), alt.Tooltip("per_100:Q", format=".1f",
           title="likes per 100"), alt.Tooltip("likes:Q"), alt.Tooltip("ratings:Q")]  # fmt: skip
    colour = alt.Color("series:N", title="", sort=["this round", f"latest {window} ratings"],
                       scale=alt.Scale(range=["#9e9e9e", "#d62728"]))  # fmt: skip
    base = alt.Chart(df).encode(
        x=alt.X("round:Q", title="round"), y=alt.Y("per_100:Q", title="likes per 100 ratings"), color=colour,
        tooltip=tip,
    )  # fmt: skip
    dots = base.transform_filter(alt.datum.series == "this round").mark_circle(size=45)
    line = base.transform_filter(alt.datum.series != "this round").mark_line(point=True, strokeWidth=3)
    title = f"Is the sweep learning? Likes per 100 ratings ({_view_name(history.get('view'))})"
    return alt.layer(dots, line).properties(title=title, width=WIDTH, height=HEIGHT)


def chart_data(chart: Any) -> list[dict[str, Any]]:
    """The rows a chart draws (tests and the browser test read them)."""
    spec = chart.to_dict()
    datasets = spec.get("datasets", {})
    return [row for rows in datasets.values() for row in rows]
