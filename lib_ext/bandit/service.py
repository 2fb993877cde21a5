"""The one facade the tab and the HTTP routes call, so the UI stays thin.

Everything here validates its inputs and raises ValueError with a message fit for the user (NotFoundError, a
ValueError subclass, for ids that do not exist: HTTP 404). Generation is not done here: `run_round` takes a
`generate` callback (the host's job runner: A1111 processing under the queue lock, or the standalone toy host).

Model per session: every arm's like-rate has a Beta posterior; the prior is either uniform or empirical Bayes
(moment-matched over the session's arms, κ ≤ 10, the same for all arms; it matters most for new arms with few
ratings); ratings can be discounted by wall-clock age (half-life). Template arms additionally learn their slot
options with a logistic slot model. Only current like/dislike ratings are observations.

Raters: every rating names its rater ("" is the unnamed rater). The session option `learn_from` chooses what
Thompson sampling and the verdict learn from: "pooled" (default) takes every rater's current like/dislike as one
observation each — an image liked by one rater and disliked by another counts once as a like and once as a
dislike, and an image two raters liked counts twice (the like-rate learned is "how often a rating of this prompt's
image is a like", raters weighted by how much they rate) — or one rater's name, to learn that rater's taste only.
Statistics can be shown for any view (pooled or one rater) without changing what the session learns.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import export as _export
from .betafn import beta_pdf
from .policy import MODES, ArmBelief, PolicyArm, choose_arms, plan_round
from .posterior import (
    UNIFORM_PRIOR,
    Observation,
    Prior,
    count_arms,
    discount_factor,
    empirical_bayes_prior,
    p_best,
    posterior,
    summarize,
)
from .settings import A1111_RULES, SettingsRules, check_settings
from .store import RATING_VALUES, NotFoundError, Store, sha256_file
from .templates import SlotModel, parse_template
from .verdict import DEFAULT_CONFIDENCE, DEFAULT_EPSILON, verdict

log = logging.getLogger("promptscope")
MAX_ROUND = 256
MAX_TEXT = 20_000
MAX_RATER = 100
MAX_UPCOMING = 32  # images the rating view may ask for at once
MAX_UPCOMING_EXCLUDE = 200  # images it holds or has not sent yet
POOLED = "pooled"  # the view / learn_from value of every rater's ratings together (not a rater name)
LIKES_WINDOW = 100  # the learning curve's moving window: likes per this many latest ratings
PRIORS = ("empirical", "uniform")
MAX_HALF_LIFE_HOURS = 1e6  # ~114 years: longer is no discount at all (use null)
DEFAULT_OPTIONS: dict[str, Any] = {
    "mode": "more_good",  # "more_good" (TS) | "find_best" (top-two TS) | "uniform"
    "shared_seeds": False,
    "half_life_hours": None,  # None: no drift discount
    "prior": "empirical",
    "round_size": 8,
    "stop_rule": "glr",  # the only rule: GLR with an indifference zone (verdict.py)
    "confidence": DEFAULT_CONFIDENCE,  # 1 − δ of the verdict
    "epsilon": DEFAULT_EPSILON,  # indifference zone in like-rate: leaders closer than this are "as good"
    "learn_from": "pooled",  # what the policy and the verdict learn from: "pooled" (every rater) or a rater's name
}
STOP_RULES = ("glr",)
# Rules of earlier versions: "stop once P(best) ≥ 95 %" read noise as certainty (three equal prompts were told
# "best found" in about one run in four), so sessions that stored them get the GLR rule; p_best_threshold was
# that rule's level and is read as the verdict's confidence.
LEGACY_STOP_RULES = ("p_best", "value_remaining", "either")


def _current_options(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored options dict in today's form (legacy stop rules and p_best_threshold mapped)."""
    out = dict(stored)
    if out.get("stop_rule") in LEGACY_STOP_RULES:
        out["stop_rule"] = "glr"
    legacy_level = out.pop("p_best_threshold", None)
    if "confidence" not in out and isinstance(legacy_level, int | float) and not isinstance(legacy_level, bool):
        out["confidence"] = float(legacy_level)
    return {**DEFAULT_OPTIONS, **out}


@dataclass(frozen=True)
class Job:
    """One image to generate. `infotext` goes into the image's generation parameters (PNG Info)."""

    index: int
    session_id: int
    round_id: int
    round_number: int
    arm_id: int
    seed: int
    prompt: str
    negative: str
    settings: dict[str, Any]
    slot_choices: tuple[int, ...] = ()
    infotext: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageResult:
    """What the host's generator returns per finished job (an interrupted round returns fewer)."""

    job: Job
    path: str
    sha256: str | None = None
    attachments: tuple[tuple[str, str], ...] = ()  # (path, caption) of saved images the host attached (heatmaps)


def generator_from_host(
    run_jobs: Callable[..., Sequence[Any]],
    request_factory: Callable[..., Any],
    save: Callable[[Any, Job], str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    save_extra: Callable[[Any, str, str, int], str] | None = None,
) -> Callable[[list[Job]], list[ImageResult]]:
    """A `generate` callback for `run_round` over a host seam (`Host.run_jobs` with `GenerationRequest`).

    `request_factory` is the seam's GenerationRequest class (passed in so this package stays free of torch);
    it is called with prompt, negative_prompt, seed, settings, infotext. Results are matched to jobs in order
    (an interrupted run returns a prefix). A result without a `path` is saved with `save(result, job)`.
    Images the host attached to a result (`extra_images`, e.g. word-heatmap grids) are saved with
    `save_extra(image, caption, image_path, n)` → path, and become the image's attachments; without `save_extra`
    they are dropped.
    """

    def generate(jobs: list[Job]) -> list[ImageResult]:
        requests = [
            request_factory(prompt=j.prompt, negative_prompt=j.negative, seed=j.seed, settings=dict(j.settings),
                            infotext=dict(j.infotext))
            for j in jobs
        ]  # fmt: skip
        results = run_jobs(requests, progress)
        out = []
        for job, res in zip(jobs, results):
            path = getattr(res, "path", None)
            if path is None:
                if save is None:
                    raise ValueError("the host returned an image without a saved path; pass save= to store it")
                path = save(res, job)
            attachments = []
            if save_extra is not None:
                extras = list(getattr(res, "extra_images", None) or [])
                captions = list(getattr(res, "extra_infotexts", None) or [])
                for n, extra in enumerate(extras):
                    caption = str(captions[n]) if n < len(captions) else ""
                    attachments.append((str(save_extra(extra, caption, str(path), n)), caption))
            out.append(ImageResult(job, str(path), attachments=tuple(attachments)))
        return out

    return generate


INFOTEXT_KEYS = {"session": "PromptScope session", "arm": "PromptScope arm", "round": "PromptScope round"}


def bandit_ref_from_infotext(params: dict[str, str]) -> dict[str, Any] | None:
    """Session, arm, round number (and slot choices) from parsed infotext parameters (PNG Info), or None."""
    try:
        ref: dict[str, Any] = {k: int(params[v]) for k, v in INFOTEXT_KEYS.items()}
    except (KeyError, TypeError, ValueError):
        return None
    slots = params.get("PromptScope slots")
    if slots is not None:
        try:
            ref["slot_choices"] = [int(x) for x in json.loads(slots)]
        except (TypeError, ValueError):
            return None
    return ref


def cohen_kappa(counts: dict[str, int]) -> dict[str, float | None]:
    """Cohen's κ of two raters' like/dislike on the same images from the 2×2 counts (both_like, a_only, b_only,
    both_dislike): κ = (p_o − p_e) / (1 − p_e). {"observed": p_o, "kappa": κ}; None where undefined (no shared
    images; p_e = 1: both gave one same answer to every image)."""
    ll, ld, dl, dd = counts["both_like"], counts["a_only"], counts["b_only"], counts["both_dislike"]
    n = ll + ld + dl + dd
    if n == 0:
        return {"observed": None, "kappa": None}
    po = (ll + dd) / n
    pa, pb = (ll + ld) / n, (ll + dl) / n  # each rater's like-rate on the shared images
    pe = pa * pb + (1 - pa) * (1 - pb)
    return {"observed": po, "kappa": None if pe >= 1.0 else (po - pe) / (1 - pe)}


# ---- validation helpers ----------------------------------------------------------------------------------------
MAX_ID = 2**63 - 1  # SQLite's largest integer: no row has a larger id (and binding one raises OverflowError)


def _id(value: Any, what: str) -> int:
    """A positive id; ValueError (HTTP 422) if not a positive integer, NotFoundError (404) beyond SQLite's range."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer id, got {value!r}")
    if value > MAX_ID:
        raise NotFoundError(f"no {what.removesuffix(' id')} with id {value} (ids are at most {MAX_ID})")
    return int(value)


def _text(value: Any, what: str, allow_empty: bool = True, max_len: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    if not allow_empty and not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > max_len:
        raise ValueError(f"{what} is longer than {max_len} characters")
    return value


def _rater(value: Any, what: str = "rater") -> str:
    """A rater's name as stored: a string (surrounding spaces dropped), "" the unnamed rater; "pooled" is not a
    name (it means every rater)."""
    if value is None:
        return ""
    name = _text(value, what, max_len=MAX_RATER).strip()
    if any(ord(ch) < 32 for ch in name):
        raise ValueError(f"{what} must not contain control characters")
    if name == POOLED:
        raise ValueError(f'{what} must not be "{POOLED}" (it means every rater together); choose another name')
    return name


def _view(value: Any, what: str = "rater") -> str | None:
    """A statistics view: None or "pooled" → None (every rater), else one rater's name."""
    if value is None or value == POOLED:
        return None
    return _rater(value, what)


def _settings(value: Any, rules: SettingsRules, what: str = "session settings") -> dict[str, Any]:
    """Generation settings as stored (a JSON object), each key checked against what the host can use."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{what} must be a JSON object (a dict with string keys)")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable: {exc}") from None
    if len(encoded) > MAX_TEXT:
        raise ValueError(f"{what} is too large")
    try:
        check_settings(value, rules)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return json.loads(encoded)


def _options(updates: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    updates = dict(updates)
    if "p_best_threshold" in updates:  # the earlier API's name for the verdict's level
        level = updates.pop("p_best_threshold")
        updates.setdefault("confidence", level)
    unknown = set(updates) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown session option(s) {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}")
    out = {**_current_options(base), **updates}
    if out["mode"] not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {out['mode']!r}")
    if not isinstance(out["shared_seeds"], bool):
        raise ValueError("shared_seeds must be true or false")
    h = out["half_life_hours"]
    # compared, not converted: float() of a huge JSON integer raises OverflowError
    if h is not None and (isinstance(h, bool) or not isinstance(h, int | float) or not 0 < h <= MAX_HALF_LIFE_HOURS):
        raise ValueError(f"half_life_hours must be a positive number up to {MAX_HALF_LIFE_HOURS:g} or null, got {h!r}")
    if out["prior"] not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {out['prior']!r}")
    k = out["round_size"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_ROUND:
        raise ValueError(f"round_size must be an integer from 1 to {MAX_ROUND}, got {k!r}")
    if out["stop_rule"] not in STOP_RULES:
        raise ValueError(f"stop_rule must be one of {STOP_RULES}, got {out['stop_rule']!r}")
    c = out["confidence"]
    if isinstance(c, bool) or not isinstance(c, int | float) or not 0.5 <= c <= 0.999:
        raise ValueError(f"confidence must be a number from 0.5 to 0.999, got {c!r}")
    e = out["epsilon"]
    if isinstance(e, bool) or not isinstance(e, int | float) or not 0 < e <= 0.5:
        raise ValueError(f"epsilon (indifference zone in like-rate) must be a number in (0, 0.5], got {e!r}")
    out["confidence"], out["epsilon"] = float(c), float(e)
    lf = out["learn_from"]
    if not isinstance(lf, str):
        raise ValueError(f'learn_from must be "{POOLED}" or a rater\'s name (a string), got {lf!r}')
    out["learn_from"] = POOLED if lf == POOLED else _rater(lf, "learn_from (a rater's name)")
    return out


def _verdict_out(v: Any, active: Sequence[int], pb: np.ndarray) -> dict[str, Any]:
    """The verdict for the tab and the API: kind, named arm ids (leader first), how many more ratings it expects
    to need, and a sentence that says what the user may conclude."""
    arm_ids = [active[i] for i in v.arms]
    leader = active[v.leader] if v.leader >= 0 else None
    more = None if v.more_ratings is None else (None if not math.isfinite(v.more_ratings) else int(v.more_ratings))
    eps, level = v.epsilon, v.confidence
    names = ", ".join(f"arm {a}" for a in arm_ids)
    if v.kind == "best":
        reason = f"arm {leader} is better than every other arm ({level:.0%} confidence)"
    elif v.kind == "tie":
        reason = (
            f"{names} are as good as each other: each is within {eps:g} like-rate of the best ({level:.0%} "
            "confidence) — pick either"
        )
    elif v.kind == "none":
        reason = "no ratings yet" if active else "no active arms"
    else:
        need = "an unknown number of" if more is None else f"about {more}"
        reason = f"not yet decided between {names}: {need} more ratings at the current pace"
    return {
        "kind": v.kind, "stop": v.stop, "leader_arm_id": leader, "arm_ids": arm_ids,
        "p_best": float(pb[v.leader]) if v.leader >= 0 else None, "more_ratings": more,
        "confidence": level, "epsilon": eps, "reason": reason,
    }  # fmt: skip


class BanditService:
    """Sessions, arms, rounds, ratings, statistics and exports over one store folder."""

    def __init__(
        self,
        data_dir: str | os.PathLike,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        store: Store | None = None,
        synchronous: str = "FULL",
        settings_rules: SettingsRules = A1111_RULES,
    ):
        """`data_dir`: the store folder. `seed`: of the planner's random generator (None: fresh entropy).
        `synchronous`: "FULL" (default; a returned rating survives kill -9 and power loss, one fsync ≈ 5 ms) or
        "NORMAL" (survives kill -9, not power loss; ≈ 0.05 ms). `settings_rules`: the generation settings the
        host can use (sessions' and arms' settings are checked against them)."""
        self.store = store or Store(data_dir, clock=clock, synchronous=synchronous)
        self.settings_rules = settings_rules
        self.clock = clock
        self._rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> BanditService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sessions ------------------------------------------------------------------------------------------------
    def create_session(self, name: str, settings: dict | None = None, **options: Any) -> dict[str, Any]:
        """`settings`: generation settings shared by the session's arms (steps, cfg, sampler, size, …);
        `options`: see DEFAULT_OPTIONS."""
        name = _text(name, "session name", allow_empty=False, max_len=200).strip()
        sid = self.store.create_session(name, _settings(settings, self.settings_rules), _options(options, {}))
        return self.get_session(sid)

    def get_session(self, session_id: int) -> dict[str, Any]:
        s = self.store.get_session(_id(session_id, "session id"))
        s["options"] = _current_options(s["options"])
        return s

    def list_sessions(self) -> list[dict[str, Any]]:
        """All sessions with their arm and image counts."""
        out = self.store.list_sessions()
        for s in out:
            s["options"] = _current_options(s["options"])
        return out

    def update_session(
        self, session_id: int, name: str | None = None, settings: dict | None = None, **options: Any
    ) -> dict[str, Any]:
        s = self.get_session(session_id)
        self.store.update_session(
            s["id"],
            name=None if name is None else _text(name, "session name", allow_empty=False, max_len=200).strip(),
            settings=None if settings is None else _settings(settings, self.settings_rules),
            options=_options(options, s["options"]) if options else None,
        )
        return self.get_session(s["id"])

    # ---- arms ----------------------------------------------------------------------------------------------------
    def _arm_out(self, arm: dict[str, Any]) -> dict[str, Any]:
        if arm["is_template"]:
            arm["slots"] = [[o.text for o in s.options] for s in parse_template(arm["prompt"]).slots]
        return arm

    def add_arm(
        self, session_id: int, prompt: str, negative: str = "", settings: dict | None = None, label: str = ""
    ) -> dict[str, Any]:
        """A whole prompt, or a template with `{a|b}` slots (detected from the prompt)."""
        sid = self.get_session(session_id)["id"]
        prompt = _text(prompt, "prompt", allow_empty=False)
        template = parse_template(prompt)  # raises a clear ValueError on bad slot syntax
        arm_id = self.store.add_arm(
            sid, prompt, _text(negative, "negative prompt"), _settings(settings, self.settings_rules, "arm settings"),
            _text(label, "label", max_len=200), is_template=bool(template.slots),
        )  # fmt: skip
        return self.get_arm(arm_id)

    def get_arm(self, arm_id: int) -> dict[str, Any]:
        return self._arm_out(self.store.get_arm(_id(arm_id, "arm id")))

    def list_arms(self, session_id: int, include_retired: bool = True) -> list[dict[str, Any]]:
        sid = self.get_session(session_id)["id"]
        return [self._arm_out(a) for a in self.store.list_arms(sid, include_retired)]

    def edit_arm(
        self,
        arm_id: int,
        prompt: str | None = None,
        negative: str | None = None,
        settings: dict | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Edit an arm. A label change is in place; a change of what gets generated (prompt, negative,
        settings) makes a new arm version (the old one is retired, its images and ratings stay with it, since
        they measured the old prompt); the new version of a retired arm stays retired until restored
        (`retire_arm(id, False)`). Returns the current version."""
        old = self.get_arm(arm_id)
        new_prompt = old["prompt"] if prompt is None else _text(prompt, "prompt", allow_empty=False)
        new_negative = old["negative"] if negative is None else _text(negative, "negative prompt")
        new_settings = old["settings"] if settings is None else _settings(settings, self.settings_rules, "arm settings")
        new_label = old["label"] if label is None else _text(label, "label", max_len=200)
        if (new_prompt, new_negative, new_settings) == (old["prompt"], old["negative"], old["settings"]):
            if new_label != old["label"]:
                self.store.set_arm_label(old["id"], new_label)
            return self.get_arm(old["id"])
        template = parse_template(new_prompt)
        new_id = self.store.replace_arm(
            old["id"], new_prompt, new_negative, new_settings, new_label, is_template=bool(template.slots)
        )
        return self.get_arm(new_id)

    def retire_arm(self, arm_id: int, retired: bool = True) -> dict[str, Any]:
        arm = self.get_arm(arm_id)
        if not isinstance(retired, bool):
            raise ValueError("retired must be true or false")
        self.store.set_arm_retired(arm["id"], retired)
        return self.get_arm(arm["id"])

    # ---- model ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _learner(opts: dict[str, Any], view: str | None = None) -> str | None:
        """Whose ratings a model uses: `view` None → the session's `learn_from`; "pooled" → every rater's (returns
        None); a name ("" the unnamed rater) → that rater's."""
        view = opts["learn_from"] if view is None else view
        return None if view == POOLED else _rater(view)

    def _model(self, session_id: int, view: str | None = None) -> dict[str, Any]:
        """Counts, prior, per-arm beliefs and slot models from the store's current ratings — of the raters the
        session learns from (`view` None: its `learn_from`), or of `view` ("pooled" / a rater's name)."""
        session = self.get_session(session_id)
        opts = session["options"]
        learner = self._learner(opts, view)
        arms = self.store.list_arms(session["id"])
        now = self.clock()
        half_life = None if opts["half_life_hours"] is None else float(opts["half_life_hours"]) * 3600.0
        rows = self.store.current_ratings(session["id"], learner)
        obs = [Observation(r["arm_id"], r["rating"] == "like", r["rated_at"]) for r in rows]
        counts = count_arms(obs, [a["id"] for a in arms], now, half_life)
        prior = empirical_bayes_prior(counts.values()) if opts["prior"] == "empirical" else UNIFORM_PRIOR
        slot_models: dict[int, SlotModel] = {}
        for arm in arms:
            if arm["is_template"] and not arm["retired"]:
                mine = [r for r in rows if r["arm_id"] == arm["id"]]
                weights = [discount_factor(now - r["rated_at"], half_life) for r in mine]
                slot_models[arm["id"]] = SlotModel(parse_template(arm["prompt"])).fit(
                    [r["slot_choices"] for r in mine], [r["rating"] == "like" for r in mine], weights
                )
        return {"session": session, "arms": arms, "counts": counts, "prior": prior, "slot_models": slot_models,
                "learner": learner, "rows": rows}  # fmt: skip

    # ---- rounds --------------------------------------------------------------------------------------------------
    def plan_round(
        self, session_id: int, k: int | None = None, mode: str | None = None, shared_seeds: bool | None = None
    ) -> list[Job]:
        """Choose the next round's images (arms, seeds, slot options) and record the round."""
        session, by_id, planned, mode, k, shared = self.plan_images(session_id, k, mode, shared_seeds)
        rnd = self.store.create_round(session["id"], mode, k, shared)
        return self.jobs_of_round(session, by_id, planned, rnd)

    def plan_images(
        self, session_id: int, k: int | None = None, mode: str | None = None, shared_seeds: bool | None = None
    ) -> tuple[dict[str, Any], dict[int, dict[str, Any]], list[Any], str, int, bool]:
        """The policy's next k images over the current posterior (pending images are not ratings), nothing
        recorded: (session, active arms by id, [PlannedImage], mode, k, shared_seeds)."""
        m = self._model(session_id)
        session, opts = m["session"], m["session"]["options"]
        k = opts["round_size"] if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_ROUND:
            raise ValueError(f"round size must be an integer from 1 to {MAX_ROUND}, got {k!r}")
        mode = opts["mode"] if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        shared = opts["shared_seeds"] if shared_seeds is None else shared_seeds
        if not isinstance(shared, bool):
            raise ValueError("shared_seeds must be true or false")
        active = [a for a in m["arms"] if not a["retired"]]
        if not active:
            raise ValueError("this session has no active arms: add a prompt (or un-retire one) first")
        n_images = self.store.image_counts(session["id"])
        prior: Prior = m["prior"]
        beliefs = {
            a["id"]: ArmBelief(
                prior.alpha + m["counts"][a["id"]].successes,
                prior.beta + m["counts"][a["id"]].failures,
                n_images.get(a["id"], 0),
                m["counts"][a["id"]].successes,
                m["counts"][a["id"]].failures,
            )
            for a in active
        }
        parms = [PolicyArm(a["id"], m["slot_models"].get(a["id"])) for a in active]
        with self._rng_lock:
            planned = plan_round(parms, beliefs, k, mode, self._rng, shared)
        return session, {a["id"]: a for a in active}, planned, mode, k, shared

    @staticmethod
    def jobs_of_round(
        session: dict[str, Any], by_id: dict[int, dict[str, Any]], planned: Sequence[Any], rnd: dict[str, Any]
    ) -> list[Job]:
        """The Jobs of a recorded round (prompts expanded, settings merged, infotext keys)."""
        jobs = []
        for i, p in enumerate(planned):
            arm = by_id[p.arm_id]
            prompt = parse_template(arm["prompt"]).expand(p.slot_choices) if arm["is_template"] else arm["prompt"]
            info = {
                INFOTEXT_KEYS["session"]: str(session["id"]),
                INFOTEXT_KEYS["arm"]: str(arm["id"]),
                INFOTEXT_KEYS["round"]: str(rnd["number"]),
            }
            if arm["is_template"]:
                info["PromptScope slots"] = json.dumps(list(p.slot_choices))
            jobs.append(
                Job(i, session["id"], rnd["id"], rnd["number"], arm["id"], p.seed, prompt, arm["negative"],
                    {**session["settings"], **arm["settings"]}, tuple(p.slot_choices), info)
            )  # fmt: skip
        return jobs

    def record_image(
        self,
        job: Job,
        path: str | os.PathLike,
        sha256: str | None = None,
        attachments: Sequence[tuple[str | os.PathLike, str]] = (),
    ) -> dict[str, Any]:
        """Register a generated image file (by path and SHA-256) for a planned job, with the (path, caption) of
        images the host attached to it (word-heatmap grids)."""
        if not isinstance(job, Job):
            raise ValueError("job must be a Job from plan_round")
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"generated image {p} does not exist")
        arm = self.get_arm(job.arm_id)
        rnd = self.store.get_round(_id(job.round_id, "round id"))
        if arm["session_id"] != job.session_id or rnd["session_id"] != job.session_id:
            raise ValueError("job does not belong to its session (arm or round of another session)")
        digest = sha256 or sha256_file(p)
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        attached = []
        for extra_path, caption in attachments:
            ep = Path(extra_path)
            if not ep.is_file():
                raise ValueError(f"attached image {ep} does not exist")
            attached.append({"path": str(ep.resolve()), "caption": _text(caption, "attachment caption")})
        image_id = self.store.add_image(
            job.session_id, job.arm_id, job.round_id, job.seed, job.prompt, job.negative, job.slot_choices,
            str(p.resolve()), digest, attached,
        )  # fmt: skip
        return self.store.get_image(image_id)

    def run_round(
        self,
        session_id: int,
        generate: Callable[[list[Job]], Sequence[ImageResult]],
        k: int | None = None,
        mode: str | None = None,
        shared_seeds: bool | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Plan a round, generate it through the host's callback, record what came back.

        An interrupted generation may return fewer results; those are recorded, the rest is reported missing.
        One arm never blocks the others: an arm whose settings the host cannot use (stored before they were
        checked) is not generated, and if generation fails the round is run again arm by arm; the arms that
        failed are reported under "failed" ({arm_id, jobs, error}) and the others' images recorded.
        """
        jobs = self.plan_round(session_id, k, mode, shared_seeds)
        failed: dict[int, str] = {}
        runnable = self._runnable(jobs, failed)
        results = self._generate(generate, runnable, failed)
        planned = {j.index: j for j in jobs}
        images, done = [], set()
        for n, res in enumerate(results, 1):
            if not isinstance(res, ImageResult) or planned.get(res.job.index) != res.job:
                raise ValueError("generate() must return ImageResult objects for the jobs it was given")
            if res.job.index in done:
                raise ValueError(f"generate() returned job {res.job.index} twice")
            done.add(res.job.index)
            images.append(self.record_image(res.job, res.path, res.sha256, res.attachments))
            if progress is not None:
                progress(n, len(jobs))
        return {
            "round": self.store.get_round(jobs[0].round_id),
            "images": images,
            "missing": [j.index for j in jobs if j.index not in done and j.arm_id not in failed],
            "failed": [
                {"arm_id": arm, "jobs": [j.index for j in jobs if j.arm_id == arm], "error": error}
                for arm, error in failed.items()
            ],
        }

    def _runnable(self, jobs: list[Job], failed: dict[int, str]) -> list[Job]:
        """The jobs whose merged settings the host can use; the others' arms go into `failed` with the reason.
        Unknown keys are ignored here (the hosts ignore them; only new settings are refused for them)."""
        for job in jobs:
            if job.arm_id not in failed:
                try:
                    check_settings(job.settings, self.settings_rules, ignore_unknown=True)
                except ValueError as exc:
                    failed[job.arm_id] = f"arm {job.arm_id}'s settings (with the session's): {exc}; edit the arm"
        return [j for j in jobs if j.arm_id not in failed]

    @staticmethod
    def _generate(
        generate: Callable[[list[Job]], Sequence[ImageResult]], jobs: list[Job], failed: dict[int, str]
    ) -> list[Any]:
        """`generate(jobs)`; if it raises, arm by arm (in planned order), so one arm's failure (recorded in
        `failed`) costs only its own images. A short result (interrupted) stops the arm-by-arm run."""
        arms = list(dict.fromkeys(j.arm_id for j in jobs))
        if len(arms) > 1:
            try:
                return list(generate(jobs))
            except Exception:
                log.warning("PromptScope: a seed-bandit round failed; generating it arm by arm", exc_info=True)
        results: list[Any] = []
        for arm in arms:
            group = [j for j in jobs if j.arm_id == arm]
            try:
                got = list(generate(group))
            except Exception as exc:
                log.warning("PromptScope: seed-bandit arm %s failed", arm, exc_info=True)
                failed[arm] = f"generating arm {arm} failed: {type(exc).__name__}: {exc}"
                continue
            results += got
            if len(got) < len(group):
                break
        return sorted(results, key=lambda r: getattr(getattr(r, "job", None), "index", -1))

    # ---- ratings -------------------------------------------------------------------------------------------------
    def rate(self, image_id: int, value: str, client: str | None = None, rater: str = "") -> dict[str, Any]:
        """Record like / dislike / skip of `rater` ("" the unnamed rater) for an image; committed before this
        returns. Each rater has their own current rating of an image."""
        image_id = _id(image_id, "image id")
        if value not in RATING_VALUES:
            raise ValueError(f"rating must be one of {RATING_VALUES}, got {value!r}")
        client = None if client is None else _text(client, "client id", max_len=200)
        rater = _rater(rater)
        event = self.store.add_rating(image_id, value, client=client, rater=rater)
        return {"image_id": image_id, "rating": value, "rater": rater, "event_id": event}

    def undo(self, session_id: int, client: str | None = None, rater: str | None = None) -> list[dict[str, Any]]:
        """Undo the last rating action (of this client and this rater, if given) in a session; [] if there is
        none. Only the undone rater's rating changes."""
        sid = self.get_session(session_id)["id"]
        client = None if client is None else _text(client, "client id", max_len=200)
        return self.store.undo_last(sid, client, None if rater is None else _rater(rater))

    def mark_rest(
        self, round_id: int, value: str = "dislike", client: str | None = None, rater: str = ""
    ) -> dict[str, Any]:
        """Rate every image of a round still pending for `rater` (default "dislike"); undone by one `undo`."""
        if value not in RATING_VALUES:
            raise ValueError(f"rating must be one of {RATING_VALUES}, got {value!r}")
        rater = _rater(rater)
        rnd = self.store.get_round(_id(round_id, "round id"))
        ids = self.store.mark_rest(rnd["id"], value, client, rater)
        return {"round_id": rnd["id"], "rating": value, "rater": rater, "image_ids": ids}

    # ---- queries -------------------------------------------------------------------------------------------------
    IMAGE_FILTERS = (*RATING_VALUES, "pending", "disagree")

    def images(
        self,
        session_id: int,
        arm_id: int | None = None,
        round_id: int | None = None,
        rating: str | None = None,
        rater: str = "",
    ) -> list[dict[str, Any]]:
        """Images with `rater`'s current rating (`rating`) and every rater's (`ratings`: {rater: value}); the
        filter is on `rater`'s rating, or "disagree": images one rater liked and another disliked."""
        sid = self.get_session(session_id)["id"]
        if rating is not None and rating not in self.IMAGE_FILTERS:
            raise ValueError(f"rating filter must be one of {self.IMAGE_FILTERS}, got {rating!r}")
        return self.store.list_images(
            sid,
            None if arm_id is None else _id(arm_id, "arm id"),
            None if round_id is None else _id(round_id, "round id"),
            rating,
            _rater(rater),
        )

    def next_to_rate(self, session_id: int, rater: str = "") -> tuple[dict[str, Any] | None, int]:
        """The backlog's next image for `rater` to rate, and how many are pending for them in the session.

        The rule (most to learn first, newest posterior first): among the arms that have pending images, the
        session's own sampling rule picks one arm from the posterior *as it is now* (Thompson in "more good
        images", top-two in "find the best", the arm with the fewest rated images in "uniform"), i.e. the arm the
        bandit would generate next if it could do so instantly; of that arm's pending images the newest (planned
        from the newest posterior) is shown. Each rating updates the posterior, so the next pick uses it."""
        m = self._model(session_id)
        rater = _rater(rater)
        by_arm = self.store.pending_by_arm(m["session"]["id"], rater)
        if not by_arm:
            return None, 0
        arm_ids = sorted(by_arm)
        pick = self._pick_arm(m, arm_ids)
        return self.store.get_image(by_arm[arm_ids[pick]][0], rater), sum(n for _, n in by_arm.values())

    def _pick_arm(self, m: dict[str, Any], arm_ids: Sequence[int]) -> int:
        """Index into `arm_ids` of the arm the session's sampling rule picks now (the backlog rule)."""
        if len(arm_ids) < 2:
            return 0
        prior, counts, mode = m["prior"], m["counts"], m["session"]["options"]["mode"]
        beliefs = [
            ArmBelief(prior.alpha + counts[a].successes, prior.beta + counts[a].failures,
                      int(round(counts[a].successes + counts[a].failures)), counts[a].successes, counts[a].failures)
            if a in counts else ArmBelief()
            for a in arm_ids
        ]  # fmt: skip
        with self._rng_lock:
            return int(choose_arms(beliefs, 1, mode, self._rng)[0])

    def upcoming(
        self,
        session_id: int,
        rater: str = "",
        n: int = 4,
        start: int | None = None,
        after: int | None = None,
        exclude: Sequence[int] = (),
    ) -> dict[str, Any]:
        """The next `n` images the rating view shows `rater`, in order, so the page can load them before the key
        press: {"images": [...], "pending": how many are pending for the rater}.

        The order is the tab's (`BanditTab.next_pending` and `next_to_rate`) played ahead: after an image, the
        pending images later in its round, then the round's earlier ones; a finished round hands over to the
        backlog rule (the arm the session's sampling rule picks, its newest pending image). The picks use the
        posterior as it is now: the page asks again after each rating, so the lag is the few images it holds.
        `start`: an image to show first (any rating: re-rating); `after`: the image the list continues from (its
        round first); `exclude`: images the page holds or has rated but not yet sent."""
        m = self._model(session_id)
        sid = m["session"]["id"]
        rater = _rater(rater)
        n = int(n)
        if not 1 <= n <= MAX_UPCOMING:
            raise ValueError(f"n must be an integer from 1 to {MAX_UPCOMING}, got {n}")
        if len(exclude) > MAX_UPCOMING_EXCLUDE:
            raise ValueError(f"at most {MAX_UPCOMING_EXCLUDE} images can be excluded, got {len(exclude)}")
        skip = {_id(i, "image id") for i in exclude}
        pending = self.store.pending_images(sid, rater)
        chosen: list[int] = []
        round_of: dict[int, int | None] = {}
        for ref, what in ((start, "start"), (after, "after")):
            if ref is None:
                continue
            img = self.store.get_image(_id(ref, f"{what} image id"))
            if img["session_id"] != sid:
                raise ValueError(f"image {img['id']} belongs to another session")
            round_of[img["id"]] = img["round_id"]
        if start is not None:
            chosen.append(int(start))
            after = int(start)
        skip.update(chosen)
        by_round: dict[int | None, list[int]] = {}
        by_arm: dict[int, list[int]] = {}  # ascending ids: the newest last
        arm_of: dict[int, int] = {}
        for iid, arm, rnd in pending:
            if iid not in skip:
                by_round.setdefault(rnd, []).append(iid)
                by_arm.setdefault(arm, []).append(iid)
                round_of[iid], arm_of[iid] = rnd, arm
        while len(chosen) < n and by_arm:
            rnd = round_of.get(after) if after is not None else None
            in_round = by_round.get(rnd, []) if rnd is not None else []
            later = [i for i in in_round if i > after]
            nxt = (later or in_round or [None])[0]
            if nxt is None:  # the round is done: the backlog rule, on the posterior as it is now
                arm_ids = sorted(by_arm)
                nxt = by_arm[arm_ids[self._pick_arm(m, arm_ids)]][-1]
            by_round[round_of[nxt]].remove(nxt)
            by_arm[arm_of[nxt]].remove(nxt)
            if not by_arm[arm_of[nxt]]:
                del by_arm[arm_of[nxt]]
            chosen.append(nxt)
            after = nxt
        arms = {a["id"]: a for a in self.store.list_arms(sid)}
        images = []
        for iid in chosen:
            img = self.store.get_image(iid, rater)
            arm = arms.get(img["arm_id"]) or {}
            img["arm_label"] = arm.get("label") or ""
            images.append(img)
        return {"images": images, "pending": len(pending)}

    def get_image(self, image_id: int, rater: str = "") -> dict[str, Any]:
        """One image with `rater`'s current rating, every rater's (`ratings`), session, arm, round, seed, path,
        sha256."""
        return self.store.get_image(_id(image_id, "image id"), _rater(rater))

    def stats(self, session_id: int, draws: int = 20_000, rater: str | None = None) -> dict[str, Any]:
        """Per-arm n, likes, dislikes, skipped, pending, posterior mean, 95 % interval, P(best) (active arms);
        the prior; and the verdict — from the ratings the session learns from (`rater` None), or of one view:
        `rater` "pooled" every rater's, or a rater's name ("" the unnamed rater). `view` names the one shown."""
        if isinstance(draws, bool) or not isinstance(draws, int) or not 100 <= draws <= 200_000:
            raise ValueError(f"draws must be an integer from 100 to 200000, got {draws!r}")
        m = self._model(session_id, rater)
        opts = m["session"]["options"]
        active = [a["id"] for a in m["arms"] if not a["retired"]]
        prior, counts = m["prior"], m["counts"]
        alphas = [prior.alpha + counts[a].successes for a in active]
        betas = [prior.beta + counts[a].failures for a in active]
        with self._rng_lock:
            pb = p_best(alphas, betas, self._rng, draws)
            rows = summarize(counts, prior, active, self._rng, draws, p_best_of=dict(zip(active, pb.tolist())))
        v = verdict(
            [counts[a].successes for a in active], [counts[a].failures for a in active], opts["confidence"],
            opts["epsilon"],
        )  # fmt: skip
        stats_by_id = {r.arm_id: r for r in rows}
        tallies = self.store.rating_tallies(m["session"]["id"], m["learner"])
        out_rows = []
        for arm in m["arms"]:
            r = stats_by_id[arm["id"]].as_dict()
            t = tallies.get(arm["id"], {})
            r.update(
                label=arm["label"], prompt=arm["prompt"], negative=arm["negative"], retired=arm["retired"],
                is_template=arm["is_template"], skipped=t.get("skip", 0), pending=t.get("pending", 0),
            )  # fmt: skip
            if arm["id"] in m["slot_models"]:
                r["slots"] = m["slot_models"][arm["id"]].option_summary()
            out_rows.append(r)
        return {
            "session_id": m["session"]["id"],
            "mode": opts["mode"],
            "prior": {"alpha": m["prior"].alpha, "beta": m["prior"].beta, "kind": opts["prior"]},
            "arms": out_rows,
            "stop": _verdict_out(v, active, pb),
            "view": POOLED if m["learner"] is None else m["learner"],
            "learn_from": opts["learn_from"],
        }

    def posterior_curves(
        self, session_id: int, points: int = 201, include_retired: bool = False, rater: str | None = None
    ) -> dict[str, Any]:
        """Posterior densities on a grid in (0, 1), for the density plot (`rater`: the view, as in `stats`)."""
        if isinstance(points, bool) or not isinstance(points, int) or not 3 <= points <= 5000:
            raise ValueError("points must be an integer from 3 to 5000")
        m = self._model(session_id, rater)
        x = np.linspace(0.0, 1.0, points)[1:-1]
        curves = {}
        for arm in m["arms"]:
            if arm["retired"] and not include_retired:
                continue
            c = m["counts"][arm["id"]]
            curves[arm["id"]] = beta_pdf(x, m["prior"].alpha + c.successes, m["prior"].beta + c.failures).tolist()
        return {"x": x.tolist(), "arms": curves, "view": POOLED if m["learner"] is None else m["learner"]}

    def history(self, session_id: int, rater: str | None = None) -> dict[str, Any]:
        """Per round number: each arm's cumulative likes/dislikes (current ratings of images from rounds so far)
        and posterior mean under the session's current prior, for the history plot; and `likes_per_100`, the
        learning curve: per round, likes per 100 ratings of its images and over the latest LIKES_WINDOW ratings
        (in image order) — rising when the sweep makes more of what is liked. No drift discount here. `rater`:
        the view, as in `stats`."""
        m = self._model(session_id, rater)
        rounds = self.store.list_rounds(m["session"]["id"])
        number_of = {r["id"]: r["number"] for r in rounds}
        rows = m["rows"]
        arm_ids = [a["id"] for a in m["arms"]]
        likes = {a: 0 for a in arm_ids}
        dislikes = {a: 0 for a in arm_ids}
        by_round: dict[int, list[dict]] = {}
        for r in rows:
            by_round.setdefault(number_of.get(r["round_id"], 0), []).append(r)
        series, curve, window = [], [], []
        for number in sorted(by_round):
            liked = [r["rating"] == "like" for r in by_round[number]]
            window = (window + liked)[-LIKES_WINDOW:]
            curve.append({
                "round": number, "ratings": len(liked), "likes": sum(liked),
                "per_100": 100.0 * sum(liked) / len(liked),
                "window": len(window), "window_per_100": 100.0 * sum(window) / len(window),
            })  # fmt: skip
            for r in by_round[number]:
                (likes if r["rating"] == "like" else dislikes)[r["arm_id"]] += 1
            a0, b0 = m["prior"].alpha, m["prior"].beta
            series.append({
                "round": number,
                "arms": {a: {"likes": likes[a], "dislikes": dislikes[a],
                             "mean": (a0 + likes[a]) / (a0 + b0 + likes[a] + dislikes[a])} for a in arm_ids},
            })  # fmt: skip
        view = POOLED if m["learner"] is None else m["learner"]
        return {"rounds": series, "likes_per_100": curve, "view": view}

    def raters(self, session_id: int) -> dict[str, Any]:
        """Who rated and how they agree: `raters` [{rater, like, dislike, skip}]; `arms` per arm the pooled and
        each rater's posterior (likes, dislikes, mean, 95 % interval, under the session's prior of that view);
        `agreement` per pair of raters on the images both liked or disliked (skips and pending left out):
        counts {both_like, a_only, b_only, both_dislike} (a_only: a liked, b disliked), n, observed agreement and
        Cohen's κ (None when it is undefined: both raters gave one same answer throughout); `disagreements` the
        number of images one rater liked and another disliked."""
        session = self.get_session(session_id)
        sid = session["id"]
        raters = self.store.raters(sid)
        names = [r["rater"] for r in raters]
        arms = self.store.list_arms(sid)
        per_view: dict[str, dict[int, dict[str, Any]]] = {}
        for view in [POOLED, *names]:
            m = self._model(sid, view)
            out = {}
            for arm in arms:
                c = m["counts"][arm["id"]]
                a, b = m["prior"].alpha + c.successes, m["prior"].beta + c.failures
                lo, hi = posterior(c, m["prior"]).interval(0.95)
                out[arm["id"]] = {"likes": c.likes, "dislikes": c.dislikes, "mean": a / (a + b), "ci_low": lo,
                                  "ci_high": hi}  # fmt: skip
            per_view[view] = out
        by_image: dict[int, dict[str, bool]] = {}
        for r in self.store.current_ratings(sid):
            by_image.setdefault(r["image_id"], {})[r["rater"]] = r["rating"] == "like"
        pairs = []
        for i, ra in enumerate(names):
            for rb in names[i + 1 :]:
                both = [(v[ra], v[rb]) for v in by_image.values() if ra in v and rb in v]
                table = {
                    "both_like": sum(a and b for a, b in both), "a_only": sum(a and not b for a, b in both),
                    "b_only": sum(b and not a for a, b in both), "both_dislike": sum(not a and not b for a, b in both),
                }  # fmt: skip
                pairs.append({"a": ra, "b": rb, "n": len(both), "counts": table, **cohen_kappa(table)})
        disagree = sum(1 for v in by_image.values() if len(set(v.values())) > 1)
        return {
            "session_id": sid,
            "learn_from": session["options"]["learn_from"],
            "raters": raters,
            "arms": [
                {
                    "arm_id": a["id"],
                    "label": a["label"],
                    "prompt": a["prompt"],
                    "retired": a["retired"],
                    "views": {v: per_view[v][a["id"]] for v in per_view},
                }
                for a in arms
            ],  # fmt: skip
            "agreement": pairs,
            "disagreements": disagree,
        }

    # ---- exports -------------------------------------------------------------------------------------------------
    def _images_for_export(
        self, session_id: int, ratings: Sequence[str], arm_ids: Sequence[int] | None, rater: str | None = None
    ) -> list:
        """Images whose rating is one of `ratings`: `rater`'s (a name, "" the unnamed rater), or with `rater`
        None (or "pooled") any rater's — an image in the set if at least one rater gave it such a rating."""
        if isinstance(ratings, str) or not ratings or any(r not in RATING_VALUES for r in ratings):
            raise ValueError(f"ratings must be a non-empty list drawn from {RATING_VALUES}")
        arms = None if arm_ids is None else {_id(a, "arm id") for a in arm_ids}
        who = _view(rater)
        imgs = self.images(session_id, rater="" if who is None else who)
        if who is None:
            return [
                i for i in imgs if set(i["ratings"].values()) & set(ratings) and (arms is None or i["arm_id"] in arms)
            ]
        return [i for i in imgs if i["rating"] in ratings and (arms is None or i["arm_id"] in arms)]

    def export_dataset(
        self,
        session_id: int,
        dest_root: str | os.PathLike,
        name: str,
        trigger: str,
        class_token: str,
        repeats: int = 10,
        ratings: Sequence[str] = ("like",),
        arm_ids: Sequence[int] | None = None,
        overwrite: bool = False,
        rater: str | None = None,
    ) -> dict[str, Any]:
        """Liked images (by default) as a kohya-ss dataset folder under dest_root/name: any rater's likes
        (`rater` None) or one rater's."""
        imgs = self._images_for_export(session_id, ratings, arm_ids, rater)
        return _export.export_kohya_dataset(imgs, dest_root, name, trigger, class_token, repeats, overwrite)

    def export_negative(
        self,
        session_id: int,
        dest_root: str | os.PathLike,
        name: str,
        trigger: str = "wrong",
        repeats: int = 1,
        ratings: Sequence[str] = ("dislike",),
        arm_ids: Sequence[int] | None = None,
        include_prompt: bool = True,
        overwrite: bool = False,
        rater: str | None = None,
    ) -> dict[str, Any]:
        """Disliked images (the user picks which ratings go in) as a "negative LoRA" set: any rater's (`rater`
        None) or one rater's."""
        imgs = self._images_for_export(session_id, ratings, arm_ids, rater)
        return _export.export_negative_set(imgs, dest_root, name, trigger, repeats, include_prompt, overwrite)

    def export_stats(
        self, session_id: int, dest_root: str | os.PathLike, name: str, overwrite: bool = False
    ) -> dict[str, str]:
        st = self.stats(session_id)
        meta = {"session_id": st["session_id"], "mode": st["mode"], "prior": st["prior"], "stop": st["stop"],
                "exported_at": self.clock()}  # fmt: skip
        return _export.export_stats(st["arms"], dest_root, name, meta, overwrite)


__all__ = ["BanditService", "ImageResult", "Job", "NotFoundError", "bandit_ref_from_infotext", "generator_from_host"]
