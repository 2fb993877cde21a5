"""The seed-bandit tab: one gradio Blocks builder for both hosts (A1111 and the standalone app).

Handlers are methods of `BanditTab` that call the `BanditService` and turn its plain data into component values;
no model logic lives here. gradio 3.41 API that gradio 4.40 keeps: no `gr.Box`, no `_js`, `gr.update` for partial
updates, string choices only (no (label, value) tuples).

Rating is one handler call per click or key: it commits the rating of the image on show (its id travels with the
request, so what is rated is what was seen) and returns the next pending image. The statistics, plots and the
round's gallery refresh in a chained event, so they never slow the rating down.

A damaged database moved aside stops the bandit (every handler reports it) until the user presses
“Acknowledge” in the notice at the top of the tab; the notice follows every change of the status line.
"""

from __future__ import annotations

import html
import inspect
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from .hosting import GenerateFn
from .routes import PREFIX as API_PREFIX
from .service import BanditService
from .store import StoreError, acknowledge_backups, unacknowledged_backups
from .ui_fast import SYNC_JS, fast_view_html

log = logging.getLogger("promptscope")
_CAPTIONS = itertools.count(1)  # numbers the captions (data-view): the page tells a new showing from an old one

MODE_LABELS = {
    "more good images (Thompson sampling)": "more_good",
    "find the best prompt (top-two Thompson sampling)": "find_best",
    "uniform sweep (like an X/Y/Z grid)": "uniform",
}
MODE_OF_VALUE = {v: k for k, v in MODE_LABELS.items()}
PRIOR_LABELS = {"empirical Bayes (from the other arms)": "empirical", "uniform Beta(1, 1)": "uniform"}
NEW_ARM = "(new arm)"
ALL_ARMS = "(all arms)"
RATING_FILTERS = ("all", "like", "dislike", "skip", "pending", "disagree")
RATING_MARK = {"like": "[liked]", "dislike": "[disliked]", "skip": "[skipped]", "pending": "[to rate]"}
RATING_WORD = {"like": "liked", "dislike": "disliked", "skip": "skipped", "pending": "not rated"}
POOLED = "pooled"  # the statistics view / learn_from of every rater's ratings together
UNNAMED = "(unnamed rater)"  # the view of ratings made with an empty Rater box ("" in the store)
EXPORT_WHOSE = ("anyone's ratings", "the Rater's ratings (box above)")
N_STATS = 8  # outputs of stats_view
STATS_HEADERS = ["arm", "label", "prompt", "n", "likes", "dislikes", "skipped", "pending", "mean", "95% CI",
                 "P(best)", "status"]  # fmt: skip
ARMS_HEADERS = ["arm", "label", "prompt", "negative", "settings", "template slots", "status"]
STATS_DRAWS = 4000  # Monte Carlo draws for P(best) in the tab (±0.8 % at worst); the API may ask for more
DEFAULT_SETTINGS = '{"steps": 20, "cfg_scale": 7}'
SETTINGS_INFO = (
    'add "heatmaps": true (or {"words": "cat, hat"}) for a word-heatmap grid of every image (slower), '
    '"semantic_guidance": {...} for guidance settings'
)


def _css(prefix: str, display_size: int = 384) -> str:
    from .ui_fast import fast_css

    return f"""<style>{fast_css(prefix, display_size)}
#{prefix}_current img {{ image-rendering: pixelated; object-fit: contain; width: 100%; height: 100%; }}
#{prefix}_round_gallery img, #{prefix}_browse_gallery img {{ image-rendering: pixelated; }}
#{prefix}_caption {{ min-height: 3em; }}
#{prefix}_caption .ps-keys, #{prefix} .ps-muted {{ opacity: 0.7; font-size: 0.9em; }}
#{prefix} .ps-error {{ color: #c62828; }}
#{prefix}_results {{ position: relative; }}  /* A1111's progress bar (absolute) sits at the top of this column */
#{prefix}_rate_row button {{ min-width: 6em; }}
</style>"""


def parse_id(value: Any) -> int | None:
    """The id at the start of a picker's choice ("12 · name") or a number; None for empty / "(new arm)"."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if value >= 1 and math.isfinite(value) else None
    head = str(value).strip().split(" ", 1)[0]
    return int(head) if head.isdigit() and int(head) >= 1 else None


def parse_json_object(text: Any, what: str) -> dict[str, Any]:
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(str(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} must be a JSON object such as {DEFAULT_SETTINGS}: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object such as {DEFAULT_SETTINGS}")
    return value


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def session_choice(s: dict[str, Any]) -> str:
    return f"{s['id']} · {_short(s['name'], 50)}"


def arm_name(arm: dict[str, Any]) -> str:
    return arm.get("label") or _short(arm["prompt"], 40)


def arm_choice(arm: dict[str, Any]) -> str:
    return f"{arm['id']} · {arm_name(arm)}" + (" (retired)" if arm.get("retired") else "")


def rater_of(value: Any) -> str:
    """The Rater box's value as the service takes it ("" the unnamed rater)."""
    return "" if value is None else str(value).strip()


def rater_label(name: str) -> str:
    return UNNAMED if name == "" else name


def view_of(choice: Any) -> str | None:
    """A view dropdown's choice → the service's `rater` argument (None: what the session learns from)."""
    if choice in (None, ""):
        return None
    return "" if choice == UNNAMED else str(choice)


def _msg(text: str) -> str:
    return f"<span>{html.escape(text)}</span>"


def _err(text: str) -> str:
    return f"<span class='ps-error'>⚠ {html.escape(text)}</span>"


class BanditTab:
    """The tab's handlers (plain methods: testable without a browser) and, via `build`, its components."""

    def __init__(
        self,
        service_factory: Callable[[], BanditService],
        generate_fn: GenerateFn | None,
        interrupt_fn: Callable[[], None] | None,
        data_dir: Callable[[], Path] | str | os.PathLike,
        elem_prefix: str = "ps_bandit",
        display_size: int = 384,
        queue_runner: Any = None,
    ):
        from .ui_queue import QueuePanel

        self.queue = QueuePanel(self, queue_runner)  # "Generate ahead" (queue, workers); ui_queue.py
        self.service_factory = service_factory
        self.generate_fn = generate_fn
        self.interrupt_fn = interrupt_fn
        self._data_dir = data_dir
        self.prefix = elem_prefix
        self.display_size = display_size
        self.c: dict[str, Any] = {}  # components by name, filled by build()

    # ---- helpers -------------------------------------------------------------------------------------------------
    @property
    def svc(self) -> BanditService:
        return self.service_factory()

    def data_dir(self) -> Path:
        return Path(self._data_dir() if callable(self._data_dir) else self._data_dir)

    def export_root(self) -> Path:
        return self.data_dir() / "exports"

    def _session_id(self, value: Any) -> int:
        sid = parse_id(value)
        if sid is None:
            raise ValueError("choose a session first (or create one under “New session”)")
        return sid

    @staticmethod
    def _image_or_none(image: dict | None) -> str | None:
        """The image's file path for gr.Image / gr.Gallery: gradio sends the file as it is (no decoding and
        re-encoding per rating); small images (the toy model's 32 px) are enlarged by CSS, pixelated."""
        if image is None or not os.path.isfile(image["path"]):
            return None
        return image["path"]

    @staticmethod
    def raters_line(image: dict[str, Any]) -> str:
        """Each rater's rating of an image ("ann liked · bob disliked"), flagged when they disagree."""
        ratings = image.get("ratings") or {}
        if not ratings:
            return ""
        parts = " · ".join(f"{html.escape(rater_label(r))} {RATING_WORD.get(v, v)}" for r, v in ratings.items())
        clash = {"like", "dislike"} <= set(ratings.values())
        flag = " <b class='ps-disagree'>⚡ raters disagree</b>" if clash else ""
        return f"<br><span class='ps-raters'>ratings: {parts}</span>{flag}"

    def caption(self, image: dict | None, pending: int, sid: int | None = None, rater: str = "") -> str:
        """What is on show: arm, seed, round, each rater's rating. The element carries the image id, session and
        rater, and a number new with every caption: the page's rating view (promptscope_bandit.js) takes over
        each image the tab shows (a session loaded, a round made, a gallery pick, another rater), also the same
        image again."""
        sid = image["session_id"] if image is not None else sid
        data = (
            f"data-image-id='{'' if image is None else int(image['id'])}' data-session-id='{sid or ''}' "
            f"data-rater='{html.escape(rater, quote=True)}' data-view='{next(_CAPTIONS)}'"
        )
        if image is None:
            return (
                f"<div {data} class='ps-caption'>Nothing left to rate"
                f"{' in this session' if pending == 0 else ''}. Generate a round.</div>"
            )
        arm = self.svc.get_arm(image["arm_id"])
        missing = "" if os.path.isfile(image["path"]) else " <span class='ps-error'>(file missing)</span>"
        return (
            f"<div {data} class='ps-caption'>"
            f"<b>image {int(image['id'])}</b> · arm {arm['id']} <i>{html.escape(arm_name(arm))}</i> · "
            f"round {image.get('round_number') or '?'} · seed {int(image['seed'])} · {pending} to rate{missing}"
            f"{self.raters_line(image)}<br>"
            f"<span class='ps-muted'>{html.escape(_short(image['prompt'], 160))}</span><br>"
            "<span class='ps-keys'>keys: L / → like · D / ← dislike · S / ↓ skip · U undo</span></div>"
        )

    def next_pending(
        self, sid: int, round_id: int | None = None, after: int | None = None, rater: str = ""
    ) -> tuple[dict | None, int]:
        """The next image for `rater` to rate and how many are left: the first image pending for them after `after`
        in the round (else the round's first); when the round is done, the backlog's next by `next_to_rate`.
        Only the round's rows are read in the common case, so a rating costs the same in a session of any size."""
        svc = self.svc
        if round_id is not None:
            in_round = svc.images(sid, round_id=round_id, rating="pending", rater=rater)
            if in_round:
                later = [i for i in in_round if after is not None and i["id"] > after]
                return (later or in_round)[0], len(in_round)
        # the backlog (e.g. a queue's): most to learn first, newest posterior first
        return svc.next_to_rate(sid, rater)

    # ---- view builders (plain values) ----------------------------------------------------------------------------
    def sessions_update(self, selected: int | None = None) -> dict:
        sessions = self.svc.list_sessions()
        choices = [session_choice(s) for s in sessions]
        value = next((c for s, c in zip(sessions, choices) if s["id"] == selected), None)
        return gr.update(choices=choices, value=value)

    def arms_view(self, sid: int | None) -> list[Any]:
        """[arms table, arm picker, browse picker]."""
        if sid is None:
            return [[], gr.update(choices=[NEW_ARM], value=NEW_ARM), gr.update(choices=[ALL_ARMS], value=ALL_ARMS)]
        arms = self.svc.list_arms(sid)
        rows = [
            [a["id"], a["label"], a["prompt"], a["negative"], json.dumps(a["settings"]) if a["settings"] else "",
             " / ".join("{" + "|".join(s) + "}" for s in a.get("slots", [])), "retired" if a["retired"] else "active"]
            for a in arms
        ]  # fmt: skip
        picks = [NEW_ARM] + [arm_choice(a) for a in arms]
        return [
            rows,
            gr.update(choices=picks, value=NEW_ARM),
            gr.update(choices=[ALL_ARMS] + [arm_choice(a) for a in arms], value=ALL_ARMS),
        ]

    def view_choices(self, sid: int) -> list[str]:
        """The statistics views: pooled and each rater who has rated in the session."""
        return [POOLED, *(rater_label(r["rater"]) for r in self.svc.store.raters(sid))]

    def stats_view(self, sid: int | None, view: Any = None) -> list[Any]:
        """[verdict html, stats table, density plot, history plot, slot weights html, likes-per-100 plot, raters
        html, view picker] for `view` (a view picker's choice; None: what the session learns from)."""
        from .plots import density_chart, history_chart, likes_chart

        if sid is None:
            return ["", [], None, None, "", None, "", gr.update(choices=[POOLED], value=POOLED)]
        svc = self.svc
        who = view_of(view)
        st = svc.stats(sid, draws=STATS_DRAWS, rater=who)
        labels = {r["arm_id"]: f"{r['arm_id']} {r['label'] or _short(r['prompt'], 22)}" for r in st["arms"]}
        rows = []
        for r in st["arms"]:
            rows.append([
                r["arm_id"], r["label"], _short(r["prompt"], 80), r["n"], r["likes"], r["dislikes"], r["skipped"],
                r["pending"], round(r["mean"], 3), f"{r['ci_low']:.3f} – {r['ci_high']:.3f}",
                "" if r["p_best"] is None else round(r["p_best"], 3), "retired" if r["retired"] else "active",
            ])  # fmt: skip
        verdict = self.verdict_html(st)
        active_labels = {
            a: name for a, name in labels.items() if not next(r for r in st["arms"] if r["arm_id"] == a)["retired"]
        }
        shown = st["view"]
        density = density_chart(svc.posterior_curves(sid, rater=shown), active_labels)
        hist = svc.history(sid, rater=shown)
        choices = self.view_choices(sid)
        picked = rater_label(shown) if shown != POOLED else POOLED
        picker = gr.update(choices=choices if picked in choices else [*choices, picked], value=picked)
        return [verdict, rows, density, history_chart(hist, labels), self.slots_html(st), likes_chart(hist),
                self.raters_html(svc.raters(sid), labels), picker]  # fmt: skip

    @staticmethod
    def raters_html(info: dict[str, Any], labels: dict[int, str]) -> str:
        """Who rated, each rater's posterior mean per arm beside the pooled one, and how the raters agree (Cohen's
        κ and the counts on the images both rated)."""
        raters = info["raters"]
        if len(raters) < 2:
            return ""
        views = [POOLED, *(r["rater"] for r in raters)]
        head = "".join(f"<th>{html.escape(rater_label(v) if v != POOLED else POOLED)}</th>" for v in views)
        body = []
        for arm in info["arms"]:
            if arm["retired"]:
                continue
            cells = []
            for v in views:
                x = arm["views"][v]
                cells.append(f"<td>{x['mean']:.2f} <span class='ps-muted'>({x['likes']}/{x['likes'] + x['dislikes']})"
                             "</span></td>")  # fmt: skip
            name = html.escape(labels.get(arm["arm_id"], str(arm["arm_id"])))
            body.append(f"<tr><td>{name}</td>{''.join(cells)}</tr>")
        pairs = []
        for p in info["agreement"]:
            a, b = html.escape(rater_label(p["a"])), html.escape(rater_label(p["b"]))
            k = "undefined" if p["kappa"] is None else f"{p['kappa']:.2f}"
            c = p["counts"]
            pairs.append(
                f"<li>{a} × {b}: κ = {k} on {p['n']} image(s) both rated — both liked {c['both_like']}, only {a} "
                f"liked {c['a_only']}, only {b} liked {c['b_only']}, both disliked {c['both_dislike']}</li>"
            )
        learn = info["learn_from"]
        return (
            "<div class='ps-raters-stats'><b>Raters</b> <span class='ps-muted'>(posterior mean like-rate, likes/"
            f"ratings; the session learns from <b>{html.escape(rater_label(learn) if learn != POOLED else POOLED)}"
            f"</b>; {info['disagreements']} image(s) liked by one rater and disliked by another: Browse → "
            f"“disagree”)</span><table><tr><th>arm</th>{head}</tr>{''.join(body)}</table>"
            f"<ul>{''.join(pairs)}</ul></div>"
        )

    @staticmethod
    def verdict_html(st: dict[str, Any]) -> str:
        stop, prior = st["stop"], st["prior"]
        prior_txt = f"prior Beta({prior['alpha']:.2f}, {prior['beta']:.2f}) ({prior['kind']})"
        if not any(not r["retired"] for r in st["arms"]):
            return _msg(f"No active arms. {prior_txt}")
        lead = (
            "no ratings yet"
            if stop["leader_arm_id"] is None
            else f"leader: arm {stop['leader_arm_id']}, P(best) = {stop['p_best']:.3f}"
        )
        # The verdict holds whichever mode chose the images (the GLR rule is valid under any allocation).
        word = {"best": "✅ Stop: the best prompt is found", "tie": "✅ Stop: as good as each other"}.get(
            stop["kind"], "⏳ Keep rating" if st["mode"] == "find_best" else "Best prompt not decided yet"
        )
        return (
            f"<div><b>{word}</b> — {html.escape(stop['reason'])}. <span class='ps-muted'>{html.escape(lead)}; "
            f"indifference zone ε = {stop['epsilon']:g}; {html.escape(prior_txt)}</span></div>"
        )

    @staticmethod
    def slots_html(st: dict[str, Any]) -> str:
        parts = []
        for r in st["arms"]:
            if not r.get("slots"):
                continue
            rows = []
            for n, slot in enumerate(r["slots"], 1):
                best = max(slot, key=lambda o: o["weight_mean"])
                opts = ", ".join(
                    f"{'<b>' if o is best else ''}{html.escape(o['text'])} {o['weight_mean']:+.2f}±{o['weight_sd']:.2f}"
                    f"{'</b>' if o is best else ''}"
                    for o in slot
                )
                rows.append(f"<li>slot {n}: {opts}</li>")
            parts.append(
                f"<div>arm {r['arm_id']} <i>{html.escape(_short(r['prompt'], 60))}</i><ul>{''.join(rows)}</ul></div>"
            )
        if not parts:
            return ""
        return "<div class='ps-muted'>Template slot options (logit weight, mean ± sd):</div>" + "".join(parts)

    def round_gallery(self, sid: int | None, round_id: int | None, rater: str = "") -> list[Any]:
        """The round's images, each marked with `rater`'s rating."""
        if sid is None:
            return []
        svc = self.svc
        images = svc.images(sid, round_id=round_id, rater=rater) if round_id else []
        out = []
        for im in images:
            shown = self._image_or_none(im)
            if shown is not None:
                out.append(
                    (shown, f"{RATING_MARK.get(im['rating'], '')} #{im['id']} arm {im['arm_id']} seed {im['seed']}")
                )
        return out

    @staticmethod
    def image_label(im: dict[str, Any]) -> str:
        mark = RATING_MARK.get(im["rating"], "")
        others = ", ".join(f"{rater_label(r)}: {v}" for r, v in (im.get("ratings") or {}).items())
        return f"{mark} #{im['id']} arm {im['arm_id']} r{im.get('round_number')} seed {im['seed']}" + (
            f" ({others})" if others else ""
        )

    def latest_round_id(self, sid: int) -> int | None:
        images = self.svc.images(sid)
        ids = [i["round_id"] for i in images if i["round_id"] is not None]
        return max(ids) if ids else None

    def attachments_view(self, image_value: Any) -> dict:
        """The images the host attached to the image on show (its word-heatmap grid), or a hidden gallery. Its own
        event after the rating's, so the rating never waits for it."""
        try:
            iid = parse_id(image_value)
            attached = [] if iid is None else self.svc.get_image(iid).get("attachments") or []
        except (ValueError, StoreError):
            attached = []
        shown = [(a["path"], a.get("caption") or "") for a in attached if os.path.isfile(a["path"])]
        return gr.update(value=shown or None, visible=bool(shown))

    def current_view(
        self, sid: int | None, round_id: int | None, after: int | None = None, rater: str = ""
    ) -> list[Any]:
        """[image, caption, current id]: the next image pending for `rater`."""
        if sid is None:
            return [None, self.caption(None, 0), ""]
        image, pending = self.next_pending(sid, round_id, after, rater)
        return [self._image_or_none(image), self.caption(image, pending, sid, rater),
                "" if image is None else str(image["id"])]  # fmt: skip

    # ---- a damaged database moved aside -------------------------------------------------------------------------
    def pending_backups(self) -> list[Path]:
        try:
            return unacknowledged_backups(self.data_dir())
        except (ValueError, OSError):  # an unusable data folder: the handlers say so in the status
            return []

    @staticmethod
    def store_notice_html(backups: Sequence[Path]) -> str:
        where = "".join(f"<li><code>{html.escape(str(b))}</code></li>" for b in backups)
        return (
            "<div class='ps-error'><b>⚠ The seed-bandit database was damaged and has been moved aside</b> to:"
            f"<ul>{where}</ul>Nothing was deleted: your earlier ratings are in that file. The seed bandit (this tab "
            "and its HTTP API) is stopped until you acknowledge this; then it starts a new, empty database. To "
            "recover the old one instead, stop the server and copy the backup back over the database file.</div>"
        )

    def store_notice_view(self) -> list[Any]:
        """[notice html, acknowledge button]: shown while a moved-aside database is unacknowledged."""
        backups = self.pending_backups()
        return [
            gr.update(value=self.store_notice_html(backups) if backups else "", visible=bool(backups)),
            gr.update(visible=bool(backups)),
        ]

    def acknowledge_store(self) -> list[Any]:
        """The acknowledge button: [notice, button, status]."""
        try:
            done = acknowledge_backups(self.data_dir())
        except (ValueError, StoreError) as exc:
            return [gr.update(), gr.update(), _err(str(exc))]
        said = f"Acknowledged: {', '.join(map(str, done))} stays as a backup. " if done else ""
        return [*self.store_notice_view(), _msg(f"{said}A new, empty database is in use; create a session.")]

    # ---- handlers --------------------------------------------------------------------------------------------------
    # Output lists; every handler's last output is the status HTML (A1111's wrap_gradio_gpu_call appends to it).
    N_SESSION_OUT = 18 + N_STATS  # outputs of load_session (the status last)

    def session_options_view(self, s: dict[str, Any] | None) -> list[Any]:
        """[settings json, prior, half-life, ε, confidence, learn from] of the session options editor."""
        if s is None:
            return [gr.update()] * 6
        opts = s["options"]
        prior = next((k for k, v in PRIOR_LABELS.items() if v == opts["prior"]), None)
        learn = POOLED if opts["learn_from"] == POOLED else rater_label(opts["learn_from"])
        choices = self.view_choices(s["id"])
        learn_pick = gr.update(choices=choices if learn in choices else [*choices, learn], value=learn)
        return [json.dumps(s["settings"]), prior, opts["half_life_hours"] or 0, opts["epsilon"], opts["confidence"],
                learn_pick]  # fmt: skip

    def load_session(self, session_value: Any, rater_value: Any = "") -> list[Any]:
        """Everything for the chosen session: [arms ×3, round k, mode, shared, current ×3, round id, round gallery,
        stats ×N_STATS, session options ×6, status]; the image on show is the next one pending for the Rater."""
        try:
            sid = parse_id(session_value)
            rater = rater_of(rater_value)
            if sid is None:
                return [*self.arms_view(None), gr.update(), gr.update(), gr.update(), *self.current_view(None, None),
                        "", [], *self.stats_view(None), *self.session_options_view(None),
                        _msg("No session chosen.")]  # fmt: skip
            s = self.svc.get_session(sid)
            opts = s["options"]
            rid = self.latest_round_id(sid)
            return [
                *self.arms_view(sid), opts["round_size"], MODE_OF_VALUE.get(opts["mode"]), opts["shared_seeds"],
                *self.current_view(sid, rid, rater=rater), "" if rid is None else str(rid),
                self.round_gallery(sid, rid, rater), *self.stats_view(sid), *self.session_options_view(s),
                _msg(f"Session {s['id']} “{s['name']}”: {len(self.svc.list_arms(sid))} arms."),
            ]  # fmt: skip
        except (ValueError, StoreError) as exc:
            return [gr.update()] * (self.N_SESSION_OUT - 1) + [_err(str(exc))]

    def save_session_options(
        self, session_value: Any, settings_json: str, prior_label: Any, half_life: Any, epsilon: Any = None,
        confidence: Any = None, learn_from: Any = None,
    ) -> list:  # fmt: skip
        """Change the session's shared generation settings, prior, drift half-life, the verdict's indifference
        zone and confidence, and whose ratings it learns from (None: unchanged): [stats ×N_STATS, status]."""
        try:
            sid = self._session_id(session_value)
            hl = None if half_life in (None, "", 0) else float(half_life)
            verdict_opts = {k: float(v) for k, v in (("epsilon", epsilon), ("confidence", confidence)) if v is not None}
            if learn_from not in (None, ""):
                verdict_opts["learn_from"] = view_of(learn_from)
            s = self.svc.update_session(
                sid, settings=parse_json_object(settings_json, "generation settings"),
                prior=PRIOR_LABELS.get(prior_label, "empirical"), half_life_hours=hl, **verdict_opts,
            )  # fmt: skip
            return [*self.stats_view(sid), _msg(f"Session {s['id']} options saved.")]
        except (ValueError, TypeError, StoreError) as exc:
            return [gr.update()] * N_STATS + [_err(str(exc))]

    def create_session(
        self, name: str, settings_json: str, mode_label: str, prior_label: str, half_life: Any, round_size: Any,
        shared: bool,
    ) -> list[Any]:  # fmt: skip
        """[session picker, status]; the picker's change event then loads the session."""
        try:
            hl = None if half_life in (None, "", 0) else float(half_life)
            s = self.svc.create_session(
                name or "", parse_json_object(settings_json, "generation settings"),
                mode=MODE_LABELS.get(mode_label, "more_good"), prior=PRIOR_LABELS.get(prior_label, "empirical"),
                half_life_hours=hl, round_size=int(round_size or 8), shared_seeds=bool(shared),
            )  # fmt: skip
            return [self.sessions_update(s["id"]), _msg(f"Created session {s['id']} “{s['name']}”. Add arms next.")]
        except (ValueError, TypeError, StoreError) as exc:
            return [gr.update(), _err(str(exc))]

    def refresh_sessions(self, session_value: Any, rater_value: Any = "") -> list[Any]:
        """[session picker, everything `load_session` shows]: picks up sessions made elsewhere (the API, another
        tab) and reloads the chosen one."""
        try:
            picker = self.sessions_update(parse_id(session_value))
        except (ValueError, StoreError) as exc:
            return [gr.update()] * self.N_SESSION_OUT + [_err(str(exc))]
        return [picker, *self.load_session(session_value, rater_value)]

    def pick_arm(self, arm_value: Any) -> list[Any]:
        """[prompt, negative, label, settings json, status] of the arm chosen for editing."""
        aid = parse_id(arm_value)
        if aid is None:
            return ["", "", "", "", _msg("New arm: write a prompt ({a|b} slots make a template) and press Add arm.")]
        try:
            a = self.svc.get_arm(aid)
        except (ValueError, StoreError) as exc:
            return [gr.update()] * 4 + [_err(str(exc))]
        state = "retired" if a["retired"] else "active"
        return [a["prompt"], a["negative"], a["label"], json.dumps(a["settings"]) if a["settings"] else "",
                _msg(f"Arm {a['id']} ({state}). Saving a changed prompt makes a new version of the arm.")]  # fmt: skip

    def _after_arm_change(self, sid: int, message: str) -> list[Any]:
        return [*self.arms_view(sid), *self.stats_view(sid), _msg(message)]

    def add_arm(self, session_value: Any, prompt: str, negative: str, label: str, settings_json: str) -> list[Any]:
        """[arms ×3, stats ×5, status]."""
        try:
            sid = self._session_id(session_value)
            a = self.svc.add_arm(sid, prompt or "", negative or "", parse_json_object(settings_json, "arm settings"),
                                 label or "")  # fmt: skip
            kind = f"template with {len(a.get('slots', []))} slot(s)" if a["is_template"] else "prompt"
            return self._after_arm_change(sid, f"Added arm {a['id']} ({kind}).")
        except (ValueError, StoreError) as exc:
            return [gr.update()] * (3 + N_STATS) + [_err(str(exc))]

    def save_arm(
        self, session_value: Any, arm_value: Any, prompt: str, negative: str, label: str, settings_json: str
    ) -> list[Any]:
        try:
            sid = self._session_id(session_value)
            aid = parse_id(arm_value)
            if aid is None:
                raise ValueError("choose an arm to edit (or press Add arm for a new one)")
            old = self.svc.get_arm(aid)
            if old["session_id"] != sid:
                raise ValueError(f"arm {aid} belongs to another session")
            new = self.svc.edit_arm(aid, prompt, negative, parse_json_object(settings_json, "arm settings"), label)
            if new["id"] == aid:
                text = f"Arm {aid} saved."
            elif old["retired"]:  # editing is not restoring: the new version waits, retired, until restored
                text = f"New version of retired arm {aid}: arm {new['id']}, also retired (restore it to rate it)."
            else:
                text = f"Arm {aid} retired (its ratings measured the old prompt); new version: arm {new['id']}."
            return self._after_arm_change(sid, text)
        except (ValueError, StoreError) as exc:
            return [gr.update()] * (3 + N_STATS) + [_err(str(exc))]

    def toggle_retired(self, session_value: Any, arm_value: Any) -> list[Any]:
        try:
            sid = self._session_id(session_value)
            aid = parse_id(arm_value)
            if aid is None:
                raise ValueError("choose an arm to retire or restore")
            arm = self.svc.get_arm(aid)
            if arm["session_id"] != sid:
                raise ValueError(f"arm {aid} belongs to another session")
            arm = self.svc.retire_arm(aid, not arm["retired"])
            return self._after_arm_change(sid, f"Arm {aid} {'retired' if arm['retired'] else 'restored'}.")
        except (ValueError, StoreError) as exc:
            return [gr.update()] * (3 + N_STATS) + [_err(str(exc))]

    def run_round(self, session_value: Any, k: Any, mode_label: Any, shared: Any, progress: Any = None) -> list[Any]:
        """Plan, generate and record a round: [current ×3, round id, round gallery, stats ×N_STATS, status]. The
        round controls (size, mode, shared seeds) are saved as the session's options. (A new round's images are
        pending for every rater, so what it shows is the same whoever rates.)"""
        n = 6 + N_STATS
        try:
            if self.generate_fn is None:
                raise ValueError("this host cannot generate images")
            sid = self._session_id(session_value)
            mode = MODE_LABELS.get(mode_label) if mode_label else None

            def report(done: int, total: int, message: str = "") -> None:
                if progress is not None:
                    progress((done, max(total, 1)), desc=message or f"{done}/{total}")

            # The round's mode / size / shared seeds become the session's (the verdict follows the mode in use).
            changes = {"round_size": int(k)} if k else {}
            if mode:
                changes["mode"] = mode
            if shared is not None:
                changes["shared_seeds"] = bool(shared)
            current = self.svc.get_session(sid)["options"]
            if any(current.get(key) != v for key, v in changes.items()):
                self.svc.update_session(sid, **changes)
            gen = self.generate_fn
            result = self.svc.run_round(
                sid, lambda jobs: gen(jobs, report), k=int(k) if k else None, mode=mode, shared_seeds=bool(shared)
            )
            rid = result["round"]["id"]
            n_img, missing = len(result["images"]), len(result["missing"])
            note = f" ({missing} not generated: interrupted)" if missing else ""
            first = result["images"][0]["id"] - 1 if result["images"] else None
            status = _msg(
                f"Round {result['round']['number']}: {n_img} image(s){note}. Rate: L like, D dislike, S skip."
            )
            failures = "".join(
                "<br>" + _err(f"{len(f['jobs'])} image(s) not generated: {f['error']}") for f in result["failed"]
            )
            return [
                *self.current_view(sid, rid, first), str(rid), self.round_gallery(sid, rid),
                *self.stats_view(sid),
                status + failures,
            ]  # fmt: skip
        except (ValueError, StoreError) as exc:
            return [gr.update()] * (n - 1) + [_err(str(exc))]
        except Exception as exc:  # the host's generation failed (model, memory, …): say so, keep the page alive
            log.exception("PromptScope: seed-bandit round failed")
            return [gr.update()] * (n - 1) + [_err(f"generation failed: {type(exc).__name__}: {exc}")]

    def interrupt(self) -> None:
        if self.interrupt_fn is not None:
            self.interrupt_fn()

    def rate(
        self, session_value: Any, image_value: Any, round_value: Any, value: str, client: str | None = None,
        rater_value: Any = "",
    ) -> list[Any]:  # fmt: skip
        """Commit the Rater's rating of the image on show and show the next one pending for them: [image, caption,
        id, status]."""
        try:
            sid = self._session_id(session_value)
            rater = rater_of(rater_value)
            iid = parse_id(image_value)
            if iid is None:
                return [gr.update(), gr.update(), gr.update(), _msg("Nothing to rate: generate a round first.")]
            svc = self.svc
            image = svc.get_image(iid)
            if image["session_id"] != sid:
                raise ValueError(f"image {iid} belongs to another session")
            svc.rate(iid, value, client=client, rater=rater)
            # The next image comes from the rated image's round (an older round being finished stays cheap).
            after_round = image["round_id"] or parse_id(round_value)
            who = f" by {rater}" if rater else ""
            return [*self.current_view(sid, after_round, iid, rater), _msg(f"Image {iid}: {value}{who}.")]
        except (ValueError, StoreError) as exc:
            return [gr.update(), gr.update(), gr.update(), _err(str(exc))]

    def undo(self, session_value: Any, round_value: Any, client: str | None = None, rater_value: Any = "") -> list[Any]:
        """Undo the Rater's last rating action (in this page); the undone image is shown again: [image, caption,
        id, status]."""
        try:
            sid = self._session_id(session_value)
            rater = rater_of(rater_value)
            svc = self.svc
            undone = svc.undo(sid, client=client, rater=rater)
            if not undone:
                return [gr.update(), gr.update(), gr.update(), _msg("Nothing to undo.")]
            back = [u for u in undone if u["value"] == "pending"]
            if back:
                img = svc.get_image(back[0]["image_id"], rater)
                _, pending = self.next_pending(sid, rater=rater)
                view = [self._image_or_none(img), self.caption(img, pending, sid, rater), str(img["id"])]
            else:
                view = self.current_view(sid, parse_id(round_value), rater=rater)
            ids = ", ".join(str(u["image_id"]) for u in undone)
            return [*view, _msg(f"Undone: image(s) {ids}.")]
        except (ValueError, StoreError) as exc:
            return [gr.update(), gr.update(), gr.update(), _err(str(exc))]

    def select_image(self, session_value: Any, round_value: Any, index: Any, rater_value: Any = "") -> list[Any]:
        """Show the round gallery's `index`-th image for rating (or re-rating): [image, caption, id, status]."""
        try:
            sid = self._session_id(session_value)
            rid = parse_id(round_value)
            rater = rater_of(rater_value)
            images = self.svc.images(sid, round_id=rid, rater=rater) if rid else []
            shown = [im for im in images if os.path.isfile(im["path"])]
            if not isinstance(index, int) or not 0 <= index < len(shown):
                return [gr.update(), gr.update(), gr.update(), _msg("That image is no longer in this round's view.")]
            img = shown[index]
            _, pending = self.next_pending(sid, rid, rater=rater)
            state = "" if img["rating"] == "pending" else f" (now {img['rating']}d; rating again replaces it)"
            state = state.replace("skipd", "skipped")
            return [img["path"], self.caption(img, pending, sid, rater), str(img["id"]),
                    _msg(f"Image {img['id']}{state}.")]  # fmt: skip
        except (ValueError, StoreError) as exc:
            return [gr.update(), gr.update(), gr.update(), _err(str(exc))]

    def mark_rest(
        self, session_value: Any, round_value: Any, client: str | None = None, rater_value: Any = ""
    ) -> list[Any]:
        """Rate every image of the round pending for the Rater as dislike (one undo reverts it): [image, caption,
        id, status]."""
        try:
            sid = self._session_id(session_value)
            rid = parse_id(round_value)
            rater = rater_of(rater_value)
            if rid is None:
                raise ValueError("no round to finish: generate a round first")
            out = self.svc.mark_rest(rid, "dislike", client=client, rater=rater)
            n = len(out["image_ids"])
            return [*self.current_view(sid, rid, rater=rater), _msg(f"Marked {n} pending image(s) as disliked.")]
        except (ValueError, StoreError) as exc:
            return [gr.update(), gr.update(), gr.update(), _err(str(exc))]

    def rater_changed(self, session_value: Any, round_value: Any, rater_value: Any) -> list[Any]:
        """The Rater box changed: the next image pending for that rater: [image, caption, id, status]."""
        try:
            sid = parse_id(session_value)
            if sid is None:
                return [gr.update(), gr.update(), gr.update(), gr.update()]
            rater = rater_of(rater_value)
            who = f"Rating as {rater}" if rater else "Rating as the unnamed rater"
            return [*self.current_view(sid, parse_id(round_value), rater=rater), _msg(f"{who}.")]
        except (ValueError, StoreError) as exc:
            return [gr.update(), gr.update(), gr.update(), _err(str(exc))]

    def refresh_view(self, session_value: Any, round_value: Any, view: Any = None, rater_value: Any = "") -> list[Any]:
        """After a rating: [round gallery, stats ×N_STATS] in the chosen statistics view. Errors leave the view as
        it was (the rating reported them)."""
        try:
            sid = parse_id(session_value)
            return [self.round_gallery(sid, parse_id(round_value), rater_of(rater_value)), *self.stats_view(sid, view)]
        except (ValueError, StoreError):
            log.exception("PromptScope: seed-bandit view refresh failed")
            return [gr.update()] * (1 + N_STATS)

    def sync_view(self, session_value: Any, round_value: Any, view: Any = None, rater_value: Any = "") -> list[Any]:
        """The rating view paused (its round and rater in the inputs): [round id, round gallery, stats ×N_STATS]."""
        rid = parse_id(round_value)
        return [gr.update() if rid is None else str(rid), *self.refresh_view(session_value, rid, view, rater_value)]

    def _browsed(
        self, sid: int, arm_value: Any, rating: Any, rater_value: Any = ""
    ) -> tuple[list[dict[str, Any]], int]:
        """The images the browse gallery shows (the latest 200 that have a file) and how many matched: filtered
        by the Rater's rating, or "disagree" (liked by one rater, disliked by another)."""
        rating = None if rating in (None, "", "all") else str(rating)
        images = self.svc.images(sid, arm_id=parse_id(arm_value), rating=rating, rater=rater_of(rater_value))
        return [im for im in images[-200:] if os.path.isfile(im["path"])], len(images)

    def browse(self, session_value: Any, arm_value: Any, rating: Any, rater_value: Any = "") -> list[Any]:
        """[gallery, status] of one arm's (or all arms') images, filtered by the Rater's rating or "disagree"."""
        try:
            sid = self._session_id(session_value)
            shown, n = self._browsed(sid, arm_value, rating, rater_value)
            more = f" (the latest 200 of {n})" if n > 200 else ""
            return [[(im["path"], self.image_label(im)) for im in shown], _msg(f"{n} image(s){more}.")]
        except (ValueError, StoreError) as exc:
            return [gr.update(), _err(str(exc))]

    def browse_select(
        self, session_value: Any, arm_value: Any, rating: Any, index: Any, rater_value: Any = ""
    ) -> list[Any]:
        """A browsed image picked: [its attachments (word-heatmap grid) gallery, status]."""
        try:
            sid = self._session_id(session_value)
            shown, _n = self._browsed(sid, arm_value, rating, rater_value)
            if not isinstance(index, int) or not 0 <= index < len(shown):
                return [gr.update(value=None, visible=False), _msg("That image is no longer in the list.")]
            im = shown[index]
            view = self.attachments_view(str(im["id"]))
            note = "" if view.get("visible") else " (no heatmap grid: the session's settings did not ask for one)"
            return [view, _msg(f"Image {im['id']}: {self.image_label(im).strip()}{note}.")]
        except (ValueError, StoreError) as exc:
            return [gr.update(), _err(str(exc))]

    def export(
        self, kind: str, session_value: Any, name: str, trigger: str, class_token: str, repeats: Any,
        negative_ratings: Sequence[str], include_prompt: bool, overwrite: bool, whose: Any = None,
        rater_value: Any = "",
    ) -> str:  # fmt: skip
        """kind: "dataset" (liked → kohya folder), "negative" (chosen ratings → "wrong" set) or "stats". `whose`:
        anyone's ratings (an image in if any rater gave it such a rating) or the Rater box's."""
        try:
            sid = self._session_id(session_value)
            root = self.export_root()
            name = (name or "").strip()
            rater = rater_of(rater_value) if whose == EXPORT_WHOSE[1] else None
            if kind == "dataset":
                r = self.svc.export_dataset(sid, root, name, (trigger or "").strip(), (class_token or "").strip(),
                                            int(repeats or 10), overwrite=bool(overwrite), rater=rater)  # fmt: skip
            elif kind == "negative":
                r = self.svc.export_negative(sid, root, name, (trigger or "").strip() or "wrong", int(repeats or 1),
                                             ratings=tuple(negative_ratings or ()), include_prompt=bool(include_prompt),
                                             overwrite=bool(overwrite), rater=rater)  # fmt: skip
            elif kind == "stats":
                r = self.svc.export_stats(sid, root, name, overwrite=bool(overwrite))
                return _msg(f"Statistics written: {r['csv']} and {r['json']}")
            else:
                raise ValueError(f"unknown export {kind!r}")
            skipped = f"; {len(r['skipped'])} skipped (missing or changed files)" if r["skipped"] else ""
            return _msg(f"{len(r['written'])} image(s) with captions in {r['image_dir']}{skipped}")
        except (ValueError, TypeError, StoreError, OSError) as exc:
            return _err(str(exc))

    # ---- layout ----------------------------------------------------------------------------------------------------
    def build(self, wrap_run: Callable[[Callable[..., Any], int], Callable[..., Any]] | None = None) -> dict[str, Any]:
        """Create the components inside the current Blocks context and wire the events.

        `wrap_run(fn, n_outputs)` wraps the round handler for the host (A1111: `wrap_gradio_gpu_call`, the queue
        lock, progress and interrupt state); without it the handler gets gradio's progress tracker.
        """
        p = self.prefix
        c = self.c
        try:
            sessions = self.svc.list_sessions()
            startup_error = ""
        except (ValueError, StoreError) as exc:
            sessions, startup_error = [], str(exc)
        choices = [session_choice(s) for s in sessions]
        backups = self.pending_backups()

        with gr.Column(elem_id=p):
            gr.HTML(_css(p, self.display_size))
            c["store_notice"] = gr.HTML(self.store_notice_html(backups) if backups else "", visible=bool(backups),
                                        elem_id=f"{p}_store_notice")  # fmt: skip
            c["store_ack"] = gr.Button("Acknowledge: keep the backup, start a new database", variant="stop",
                                       visible=bool(backups), elem_id=f"{p}_store_ack")  # fmt: skip
            with gr.Row():
                # No preset value: choosing a session (or creating one) fires `change`, which loads it.
                c["session"] = gr.Dropdown(choices=choices, value=None, label="Session", elem_id=f"{p}_session",
                                           scale=4)  # fmt: skip
                c["refresh"] = gr.Button("↻ Reload", elem_id=f"{p}_refresh", scale=1)
            with gr.Accordion("New session", open=not sessions):
                with gr.Row():
                    c["new_name"] = gr.Textbox(label="Name", elem_id=f"{p}_new_name", placeholder="portraits, evening")
                    c["new_settings"] = gr.Textbox(label="Generation settings shared by the arms (JSON)",
                                                   value=DEFAULT_SETTINGS, elem_id=f"{p}_new_settings",
                                                   info=SETTINGS_INFO)  # fmt: skip
                with gr.Row():
                    c["new_mode"] = gr.Radio(list(MODE_LABELS), value=next(iter(MODE_LABELS)), label="Mode",
                                             elem_id=f"{p}_new_mode")  # fmt: skip
                    c["new_prior"] = gr.Radio(list(PRIOR_LABELS), value=next(iter(PRIOR_LABELS)),
                                              label="Prior for the arms", elem_id=f"{p}_new_prior")  # fmt: skip
                with gr.Row():
                    c["new_half_life"] = gr.Number(value=0, label="Taste drift half-life in hours (0: none)",
                                                   elem_id=f"{p}_new_half_life")  # fmt: skip
                    c["new_k"] = gr.Slider(1, 64, value=8, step=1, label="Images per round", elem_id=f"{p}_new_k")
                    c["new_shared"] = gr.Checkbox(label="Same seeds across arms", value=False,
                                                  elem_id=f"{p}_new_shared")  # fmt: skip
                c["create"] = gr.Button("Create session", elem_id=f"{p}_create")
            with gr.Accordion("Session options", open=False):
                with gr.Row():
                    c["sess_settings"] = gr.Textbox(label="Generation settings shared by the arms (JSON)",
                                                    elem_id=f"{p}_sess_settings")  # fmt: skip
                    c["sess_prior"] = gr.Radio(list(PRIOR_LABELS), label="Prior for the arms",
                                               elem_id=f"{p}_sess_prior")  # fmt: skip
                    c["sess_half_life"] = gr.Number(value=0, label="Taste drift half-life in hours (0: none)",
                                                    elem_id=f"{p}_sess_half_life")  # fmt: skip
                with gr.Row():
                    c["sess_epsilon"] = gr.Number(value=0.03, label="Verdict: as good as each other within (ε, "
                                                  "like-rate)", elem_id=f"{p}_sess_epsilon")  # fmt: skip
                    c["sess_confidence"] = gr.Number(value=0.95, label="Verdict confidence",
                                                     elem_id=f"{p}_sess_confidence")  # fmt: skip
                    c["sess_learn_from"] = gr.Dropdown(
                        choices=[POOLED],
                        value=POOLED,
                        label="Learn from (Thompson sampling and the verdict)",
                        info="pooled: every rater's like/dislike counts once each; or one rater's taste",
                        allow_custom_value=True,
                        elem_id=f"{p}_sess_learn_from",
                    )
                c["sess_save"] = gr.Button("Save session options", elem_id=f"{p}_sess_save")
            with gr.Accordion("Arms (prompts and templates)", open=True):
                c["arms_table"] = gr.Dataframe(headers=ARMS_HEADERS, value=[], interactive=False, wrap=True,
                                               elem_id=f"{p}_arms_table")  # fmt: skip
                c["arm_pick"] = gr.Dropdown(choices=[NEW_ARM], value=NEW_ARM, label="Arm to edit",
                                            elem_id=f"{p}_arm_pick")  # fmt: skip
                c["arm_prompt"] = gr.Textbox(label="Prompt ({a|b|c} makes a slot whose options are learned)",
                                             lines=2, elem_id=f"{p}_arm_prompt")  # fmt: skip
                c["arm_negative"] = gr.Textbox(label="Negative prompt", lines=1, elem_id=f"{p}_arm_negative")
                with gr.Row():
                    c["arm_label"] = gr.Textbox(label="Label", elem_id=f"{p}_arm_label")
                    c["arm_settings"] = gr.Textbox(label="Settings for this arm (JSON, overrides the session's)",
                                                   elem_id=f"{p}_arm_settings")  # fmt: skip
                with gr.Row():
                    c["add_arm"] = gr.Button("Add arm", elem_id=f"{p}_add_arm")
                    c["save_arm"] = gr.Button("Save edits", elem_id=f"{p}_save_arm")
                    c["retire_arm"] = gr.Button("Retire / restore", elem_id=f"{p}_retire_arm")
            with gr.Row():
                c["k"] = gr.Slider(1, 64, value=8, step=1, label="Images in the next round", elem_id=f"{p}_k")
                c["mode"] = gr.Radio(list(MODE_LABELS), value=next(iter(MODE_LABELS)), label="Mode",
                                     elem_id=f"{p}_mode")  # fmt: skip
                c["shared"] = gr.Checkbox(label="Same seeds across arms", value=False, elem_id=f"{p}_shared")
            with gr.Row():
                c["run"] = gr.Button("Generate round", variant="primary", elem_id=f"{p}_run")
                c["interrupt"] = gr.Button("Interrupt", elem_id=f"{p}_interrupt")
            self.queue.build()
            start = "Choose a session above." if sessions else "Create a session to start (under “New session”)."
            c["status"] = gr.HTML(_err(startup_error) if startup_error else _msg(start), elem_id=f"{p}_status")
            with gr.Row():
                with gr.Column(scale=2):
                    # The rating view (ui_fast.py): rates without a gradio round-trip once the page script runs
                    c["fast"] = gr.HTML(fast_view_html(p, API_PREFIX), elem_id=f"{p}_fast")
                    c["current"] = gr.Image(label="Rate this image", interactive=False, type="filepath",
                                            elem_id=f"{p}_current", height=self.display_size)  # fmt: skip
                    c["caption"] = gr.HTML(self.caption(None, 0), elem_id=f"{p}_caption")
                    with gr.Row(elem_id=f"{p}_rate_row"):
                        c["like"] = gr.Button("Like (L)", variant="primary", elem_id=f"{p}_like")
                        c["dislike"] = gr.Button("Dislike (D)", elem_id=f"{p}_dislike")
                        c["skip"] = gr.Button("Skip (S)", elem_id=f"{p}_skip")
                    with gr.Row(elem_id=f"{p}_undo_row"):
                        c["undo"] = gr.Button("↶ Undo (U)", elem_id=f"{p}_undo")
                        c["mark_rest"] = gr.Button("Mark the rest as bad", elem_id=f"{p}_mark_rest")
                    # Pressed by the rating view when the ratings pause (hidden by CSS: still in the page)
                    c["fast_sync"] = gr.Button("Refresh statistics", elem_id=f"{p}_fast_sync",
                                               elem_classes=["ps-hidden"])  # fmt: skip
                    # Who rates in this browser: remembered in localStorage by promptscope_bandit.js
                    c["rater"] = gr.Textbox(label="Rater (remembered in this browser; empty: unnamed)", max_lines=1,
                                            placeholder="your name", elem_id=f"{p}_rater")  # fmt: skip
                    # Shown when the image on show has attachments: its word-heatmap grid (settings {"heatmaps": true})
                    c["attached"] = gr.Gallery(label="Word heatmaps of this image", columns=1, height="auto",
                                               visible=False, preview=False, elem_id=f"{p}_attached")  # fmt: skip
                with gr.Column(scale=3, elem_id=f"{p}_results"):
                    c["round_gallery"] = gr.Gallery(label="This round", columns=4, height="auto",
                                                    elem_id=f"{p}_round_gallery", preview=False)  # fmt: skip
            c["current_id"] = gr.Textbox(visible=False, elem_id=f"{p}_current_id")
            c["round_id"] = gr.Textbox(visible=False, elem_id=f"{p}_round_id")
            c["task_id"] = gr.Textbox(visible=False, elem_id=f"{p}_task_id")
            with gr.Accordion("Statistics", open=True):
                c["verdict"] = gr.HTML(elem_id=f"{p}_verdict")
                c["stats_table"] = gr.Dataframe(headers=STATS_HEADERS, value=[], interactive=False, wrap=True,
                                                elem_id=f"{p}_stats_table")  # fmt: skip
                c["stats_view"] = gr.Dropdown(choices=[POOLED], value=POOLED, label="Whose ratings the statistics "
                                              "show", elem_id=f"{p}_stats_view")  # fmt: skip
                with gr.Row():
                    c["density"] = gr.Plot(label="Posterior densities", show_label=False, elem_id=f"{p}_density")
                    c["history"] = gr.Plot(label="History", show_label=False, elem_id=f"{p}_history")
                c["likes_plot"] = gr.Plot(label="Likes per 100 ratings", show_label=False, elem_id=f"{p}_likes_plot")
                c["raters_stats"] = gr.HTML(elem_id=f"{p}_raters_stats")
                c["slots"] = gr.HTML(elem_id=f"{p}_slots")
            with gr.Accordion("Browse an arm's images", open=False):
                with gr.Row():
                    c["browse_arm"] = gr.Dropdown(choices=[ALL_ARMS], value=ALL_ARMS, label="Arm",
                                                  elem_id=f"{p}_browse_arm")  # fmt: skip
                    c["browse_rating"] = gr.Dropdown(choices=list(RATING_FILTERS), value="all", label="Rating",
                                                     elem_id=f"{p}_browse_rating")  # fmt: skip
                    c["browse"] = gr.Button("Show", elem_id=f"{p}_browse")
                c["browse_gallery"] = gr.Gallery(label="Images", columns=6, height="auto",
                                                 elem_id=f"{p}_browse_gallery", preview=False)  # fmt: skip
                c["browse_attached"] = gr.Gallery(label="Word heatmaps of the picked image", columns=1, height="auto",
                                                  visible=False, preview=False,
                                                  elem_id=f"{p}_browse_attached")  # fmt: skip
            with gr.Accordion("Export", open=False):
                gr.Markdown(f"Exports go into named folders under `{html.escape(str(self.safe_export_root()))}`.")
                with gr.Row():
                    c["ex_name"] = gr.Textbox(label="Folder name", elem_id=f"{p}_ex_name", placeholder="my_dataset")
                    c["ex_trigger"] = gr.Textbox(label="Trigger word", value="sks", elem_id=f"{p}_ex_trigger")
                    c["ex_class"] = gr.Textbox(label="Class word", value="style", elem_id=f"{p}_ex_class")
                    c["ex_repeats"] = gr.Number(label="Repeats", value=10, precision=0, elem_id=f"{p}_ex_repeats")
                with gr.Row():
                    c["ex_neg_ratings"] = gr.CheckboxGroup(["dislike", "skip", "like"], value=["dislike"],
                                                           label="Ratings in the negative set",
                                                           elem_id=f"{p}_ex_neg_ratings")  # fmt: skip
                    c["ex_include_prompt"] = gr.Checkbox(label="Negative captions include the prompt", value=True,
                                                         elem_id=f"{p}_ex_include_prompt")  # fmt: skip
                    c["ex_overwrite"] = gr.Checkbox(label="Allow overwrite", value=False, elem_id=f"{p}_ex_overwrite")
                    c["ex_whose"] = gr.Radio(list(EXPORT_WHOSE), value=EXPORT_WHOSE[0], label="Whose likes / dislikes",
                                             elem_id=f"{p}_ex_whose")  # fmt: skip
                with gr.Row():
                    c["ex_dataset"] = gr.Button("Export liked as kohya dataset", elem_id=f"{p}_ex_dataset")
                    c["ex_negative"] = gr.Button("Export negative set", elem_id=f"{p}_ex_negative")
                    c["ex_stats"] = gr.Button("Export statistics (CSV + JSON)", elem_id=f"{p}_ex_stats")
                c["ex_status"] = gr.HTML(elem_id=f"{p}_ex_status")
        self._wire(wrap_run)
        self.queue.wire()
        return c

    def safe_export_root(self) -> Path | str:
        try:
            return self.export_root()
        except (ValueError, OSError) as exc:
            return f"(data folder unavailable: {exc})"

    def _wire(self, wrap_run: Callable[[Callable[..., Any], int], Callable[..., Any]] | None) -> None:
        c = self.c
        arms_out = [c["arms_table"], c["arm_pick"], c["browse_arm"]]
        stats_out = [c["verdict"], c["stats_table"], c["density"], c["history"], c["slots"], c["likes_plot"],
                     c["raters_stats"], c["stats_view"]]  # fmt: skip
        assert len(stats_out) == N_STATS
        current_out = [c["current"], c["caption"], c["current_id"]]
        session_out = [*arms_out, c["k"], c["mode"], c["shared"], *current_out, c["round_id"], c["round_gallery"],
                       *stats_out, c["sess_settings"], c["sess_prior"], c["sess_half_life"], c["sess_epsilon"],
                       c["sess_confidence"], c["sess_learn_from"], c["status"]]  # fmt: skip
        assert len(session_out) == self.N_SESSION_OUT
        notice_out = [c["store_notice"], c["store_ack"]]
        c["store_ack"].click(self.acknowledge_store, None, [*notice_out, c["status"]])
        # Every handler ends in the status line: a database moved aside mid-session shows its notice then.
        c["status"].change(self.store_notice_view, None, notice_out, queue=False)
        c["sess_save"].click(
            self.save_session_options,
            [c["session"], c["sess_settings"], c["sess_prior"], c["sess_half_life"], c["sess_epsilon"],
             c["sess_confidence"], c["sess_learn_from"]],
            [*stats_out, c["status"]],
        )  # fmt: skip

        def then_attached(event: Any) -> None:  # after any event that changes the image on show
            event.then(self.attachments_view, [c["current_id"]], [c["attached"]], queue=False)

        then_attached(c["session"].change(self.load_session, [c["session"], c["rater"]], session_out))
        then_attached(
            c["refresh"].click(self.refresh_sessions, [c["session"], c["rater"]], [c["session"], *session_out])
        )
        c["create"].click(
            self.create_session,
            [c["new_name"], c["new_settings"], c["new_mode"], c["new_prior"], c["new_half_life"], c["new_k"],
             c["new_shared"]],
            [c["session"], c["status"]],
        )  # fmt: skip
        arm_fields = [c["arm_prompt"], c["arm_negative"], c["arm_label"], c["arm_settings"]]
        c["arm_pick"].change(self.pick_arm, [c["arm_pick"]], [*arm_fields, c["status"]])
        arm_change_out = [*arms_out, *stats_out, c["status"]]
        c["add_arm"].click(self.add_arm, [c["session"], *arm_fields], arm_change_out)
        c["save_arm"].click(self.save_arm, [c["session"], c["arm_pick"], *arm_fields], arm_change_out)
        c["retire_arm"].click(self.toggle_retired, [c["session"], c["arm_pick"]], arm_change_out)

        run_out = [*current_out, c["round_id"], c["round_gallery"], *stats_out, c["status"]]

        # gradio fills a positional `gr.Progress()` default; a host wrapper made with functools.wraps (A1111's
        # wrap_gradio_gpu_call) keeps this signature visible, so the progress bar works inside it too. `id_task`
        # comes from the hidden task-id box, which the page script fills in A1111 ("task(…)", for A1111's own
        # progress bar, live preview and Interrupt; see RUN_JS); elsewhere it stays empty.
        def run(session_value, k, mode_label, shared, progress=gr.Progress(), id_task=""):  # noqa: B008
            return self.run_round(session_value, k, mode_label, shared, progress)

        if wrap_run is not None:
            run = wrap_run(run, len(run_out))
        run_in = [c["session"], c["k"], c["mode"], c["shared"], c["task_id"]]
        then_attached(c["run"].click(run, run_in, run_out, **js_kwarg(c["run"].click, RUN_JS)))
        # Not queued: it must run while the round holds the queue (as A1111's Interrupt).
        c["interrupt"].click(self.interrupt, None, None, queue=False)

        rate_in = [c["session"], c["current_id"], c["round_id"], c["rater"]]
        rate_out = [*current_out, c["status"]]
        refresh_in = [c["session"], c["round_id"], c["stats_view"], c["rater"]]
        refresh_out = [c["round_gallery"], *stats_out]
        for value in ("like", "dislike", "skip"):

            def rate(session_value, image_value, round_value, rater, request: gr.Request, _v: str = value):
                return self.rate(session_value, image_value, round_value, _v, client_of(request), rater)

            rated = c[value].click(rate, rate_in, rate_out)
            rated.then(self.refresh_view, refresh_in, refresh_out)
            then_attached(rated)

        def undo(session_value, round_value, rater, request: gr.Request):
            return self.undo(session_value, round_value, client_of(request), rater)

        def mark_rest(session_value, round_value, rater, request: gr.Request):
            return self.mark_rest(session_value, round_value, client_of(request), rater)

        for event in (
            c["undo"].click(undo, [c["session"], c["round_id"], c["rater"]], rate_out),
            c["mark_rest"].click(mark_rest, [c["session"], c["round_id"], c["rater"]], rate_out),
        ):
            event.then(self.refresh_view, refresh_in, refresh_out)
            then_attached(event)
        # The rating view paused: the statistics and gallery of the round it is on (not queued: a running round
        # must not hold it up).
        c["fast_sync"].click(self.sync_view, refresh_in, [c["round_id"], *refresh_out], queue=False,
                             **js_kwarg(c["fast_sync"].click, SYNC_JS))  # fmt: skip
        # Another statistics view: only the statistics change (the picker keeps its choice).
        c["stats_view"].select(self.refresh_view, refresh_in, refresh_out)
        # The Rater changes (typed, or filled from this browser's memory): show the next image pending for them.
        rater_changed = c["rater"].change(self.rater_changed, [c["session"], c["round_id"], c["rater"]], rate_out)
        then_attached(rater_changed)
        rater_changed.then(self.refresh_view, refresh_in, refresh_out)

        def select(session_value, round_value, rater, evt: gr.SelectData):
            return self.select_image(session_value, round_value, evt.index, rater)

        then_attached(c["round_gallery"].select(select, [c["session"], c["round_id"], c["rater"]], rate_out))
        browse_in = [c["session"], c["browse_arm"], c["browse_rating"], c["rater"]]
        c["browse"].click(self.browse, browse_in, [c["browse_gallery"], c["status"]])

        def browse_select(session_value, arm_value, rating, rater, evt: gr.SelectData):
            return self.browse_select(session_value, arm_value, rating, evt.index, rater)

        c["browse_gallery"].select(browse_select, browse_in, [c["browse_attached"], c["status"]])
        ex_in = [c["session"], c["ex_name"], c["ex_trigger"], c["ex_class"], c["ex_repeats"], c["ex_neg_ratings"],
                 c["ex_include_prompt"], c["ex_overwrite"], c["ex_whose"], c["rater"]]  # fmt: skip
        for kind in ("dataset", "negative", "stats"):

            def export(session_value, name, trigger, class_token, repeats, neg_ratings, include_prompt, overwrite,
                       whose, rater, _k: str = kind):  # fmt: skip
                return self.export(_k, session_value, name, trigger, class_token, repeats, neg_ratings, include_prompt,
                                   overwrite, whose, rater)  # fmt: skip

            c[f"ex_{kind}"].click(export, ex_in, [c["ex_status"]])


# The round button's page-side step: promptscope_bandit.js gives the round an A1111 task id and starts A1111's
# progress bar on it; where that script or A1111's progress functions are missing, the inputs go through as they
# are. Receives the inputs' values (gradio 3 appends the outputs'); index 4 is the task-id box.
TASK_ID_INPUT = 4
RUN_JS = f"(...args) => (window.promptscopeBanditSubmit ? window.promptscopeBanditSubmit({TASK_ID_INPUT}, args) : args)"


def js_kwarg(listener: Callable[..., Any], code: str) -> dict[str, str]:
    """The page-side function keyword of an event listener: `_js` in gradio 3, `js` in gradio 4."""
    try:
        params = inspect.signature(listener).parameters
    except (TypeError, ValueError):
        return {}
    if "_js" in params or "js" in params:
        return {"_js": code} if "_js" in params else {"js": code}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # A host's wrapper around the listener (Forge Neo's EventWrapper(*args, **kwargs) maps `_js` to `js`):
        # name it as this gradio does.
        return {"_js": code} if str(getattr(gr, "__version__", "4")).split(".")[0] == "3" else {"js": code}
    return {}


def client_of(request: Any) -> str | None:
    """A per-page client id for undo (gradio's session hash), so one tab's undo never takes back another's."""
    sh = getattr(request, "session_hash", None) if request is not None else None
    return f"tab:{sh}" if sh else None


def build_bandit_tab(
    service_factory: Callable[[], BanditService],
    generate_fn: GenerateFn | None,
    interrupt_fn: Callable[[], None] | None,
    data_dir: Callable[[], Path] | str | os.PathLike,
    elem_prefix: str = "ps_bandit",
    wrap_run: Callable[[Callable[..., Any], int], Callable[..., Any]] | None = None,
    display_size: int = 384,
    queue_runner: Any = None,
) -> BanditTab:
    """Build the tab's components inside the current gradio Blocks/Tab context; returns the `BanditTab`
    (its `c` maps names to components, its methods are the handlers). `queue_runner`: the host's QueueRunner
    (the "Generate ahead" accordion works with it)."""
    tab = BanditTab(service_factory, generate_fn, interrupt_fn, data_dir, elem_prefix, display_size, queue_runner)
    tab.build(wrap_run)
    return tab
