"""The seed-bandit tab's handlers (BanditTab) over a real store, with a fake image generator; the page builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from PIL import Image

from lib_ext.bandit.hosting import ServiceProvider, check_data_dir, image_path, save_png
from lib_ext.bandit.plots import chart_data
from lib_ext.bandit.service import ImageResult
from lib_ext.bandit.store import DB_FILENAME, unacknowledged_backups
from lib_ext.bandit.ui import MODE_LABELS, N_STATS, BanditTab, build_bandit_tab, parse_id


class FakeGenerator:
    """Writes a small PNG per job (infotext included); `stop_after` imitates an interrupted round."""

    def __init__(self, folder: Path, stop_after: int | None = None):
        self.folder, self.stop_after, self.calls = folder, stop_after, []

    def __call__(self, jobs, progress=None):
        self.calls.append(jobs)
        out = []
        for n, job in enumerate(jobs):
            if self.stop_after is not None and n >= self.stop_after:
                break
            img = Image.new("RGB", (32, 32), (job.seed % 256, 40, 90))
            path = save_png(img, json.dumps(job.infotext), image_path(self.folder, job))
            out.append(ImageResult(job, str(path)))
            if progress is not None:
                progress(n + 1, len(jobs), "gen")
        return out


@pytest.fixture
def tab(tmp_path):
    provider = ServiceProvider(tmp_path / "data", seed=3)
    gen = FakeGenerator(tmp_path / "data" / "images")
    t = BanditTab(provider, gen, None, provider.data_dir, "ps_bandit_test", display_size=128)
    yield t
    provider.close()


def chart_title(chart: Any) -> str:
    """An altair chart's or a matplotlib figure's title (the tab draws either, by what is installed)."""
    return chart.to_dict()["title"] if hasattr(chart, "to_dict") else chart.axes[0].get_title()


def plot_type(payload: Any) -> str:
    """What gr.Plot sends the page: a dict on gradio 3.41, a PlotData model on gradio 4."""
    return payload["type"] if isinstance(payload, dict) else payload.type


def session(tab: BanditTab, mode: str = "more_good", k: int = 4) -> str:
    label = next(lbl for lbl, v in MODE_LABELS.items() if v == mode)
    out = tab.create_session("test", '{"steps": 3}', label, None, 0, k, False)
    assert "Created session" in out[1], out[1]
    value = out[0]["value"]
    assert tab.add_arm(value, "a cat", "", "cat", "")[-1].startswith("<span>Added arm 1")
    assert "template with 1 slot" in tab.add_arm(value, "a {red|blue} dog", "blurry", "", '{"cfg_scale": 5}')[-1]
    return value


def test_page_builds_with_prefixed_ids(tmp_path):
    provider = ServiceProvider(tmp_path / "d")
    with gr.Blocks():
        t = build_bandit_tab(provider, None, None, provider.data_dir, "ps_bandit")
    ids = [getattr(comp, "elem_id", None) for comp in t.c.values()]
    assert all(i and i.startswith("ps_bandit_") for i in ids)
    for name in ("like", "dislike", "skip", "undo", "caption", "stats_table", "current_id"):
        assert t.c[name].elem_id == f"ps_bandit_{name}"
    provider.close()


def test_round_then_rating_walks_the_round_and_counts_only_like_dislike(tab):
    value = session(tab)
    out = tab.run_round(value, 4, None, False)
    assert "Round 1: 4 image(s)" in out[-1]
    shown, caption, current, round_id = out[0], out[1], out[2], out[3]
    assert Path(shown).is_file() and Image.open(shown).size == (32, 32)  # the file as it is (CSS enlarges it)
    assert f"data-image-id='{current}'" in caption
    seen = [int(current)]
    for value_ in ("like", "skip", "dislike"):
        res = tab.rate(value, current, round_id, value_)
        assert f"Image {current}: {value_}" in res[-1]
        current = res[2]
        seen.append(int(current))
    assert seen == sorted(seen) and len(set(seen)) == 4  # one rating = the next image of the round
    stats = tab.svc.stats(1, draws=1000)
    assert sum(a["n"] for a in stats["arms"]) == 2  # skip and pending update nothing
    assert sum(a["skipped"] for a in stats["arms"]) == 1 and sum(a["pending"] for a in stats["arms"]) == 1
    last = tab.rate(value, current, round_id, "like")
    assert last[2] == "" and "Nothing left to rate" in last[1]
    assert "Nothing to rate" in tab.rate(value, "", round_id, "like")[-1]


def test_undo_shows_the_undone_image_and_mark_rest_is_one_undo(tab):
    value = session(tab)
    out = tab.run_round(value, 4, None, False)
    first, rid = out[2], out[3]
    after = tab.rate(value, first, rid, "like")
    assert after[2] != first
    undone = tab.undo(value, rid)
    assert undone[2] == first and "Undone: image(s) " + first in undone[-1]
    rest = tab.mark_rest(value, rid)
    assert "Marked 4 pending image(s)" in rest[-1] and rest[2] == ""
    assert all(im["rating"] == "dislike" for im in tab.svc.images(1))
    back = tab.undo(value, rid)
    assert back[2] != "" and all(im["rating"] == "pending" for im in tab.svc.images(1))
    assert "Nothing to undo" in tab.undo(value, rid)[-1]


def test_undo_is_per_page_client(tab):
    value = session(tab)
    out = tab.run_round(value, 2, None, False)
    a, rid = out[2], out[3]
    b = tab.rate(value, a, rid, "like", client="tab:one")[2]
    tab.rate(value, b, rid, "dislike", client="tab:two")
    tab.undo(value, rid, client="tab:one")  # page one takes back its own rating, not page two's later one
    ratings = {im["id"]: im["rating"] for im in tab.svc.images(1)}
    assert ratings[int(a)] == "pending" and ratings[int(b)] == "dislike"


def test_rating_an_image_of_another_session_is_refused(tab):
    value = session(tab)
    out = tab.run_round(value, 2, None, False)
    other = tab.create_session("other", "{}", None, None, 0, 4, False)[0]["value"]
    res = tab.rate(other, out[2], out[3], "like")
    assert "belongs to another session" in res[-1]
    assert all(im["rating"] == "pending" for im in tab.svc.images(1))


def test_arm_edit_makes_a_version_label_edit_does_not_and_retire_toggles(tab):
    value = session(tab)
    res = tab.save_arm(value, "1 · cat", "a cat", "", "kitty", "")
    assert "Arm 1 saved" in res[-1]
    res = tab.save_arm(value, "1 · kitty", "a black cat", "", "kitty", "")
    assert "new version: arm 3" in res[-1]
    rows = {r[0]: r for r in res[0]}
    assert rows[1][-1] == "retired" and rows[3][2] == "a black cat"
    assert "Arm 3 retired" in tab.toggle_retired(value, "3 · kitty")[-1]
    assert "Arm 3 restored" in tab.toggle_retired(value, "3 · kitty")[-1]
    picked = tab.pick_arm("2 · a {red|blue} dog")
    assert picked[:4] == ["a {red|blue} dog", "blurry", "", '{"cfg_scale": 5}']


def test_editing_a_retired_arm_in_the_tab_keeps_it_retired(tab):
    value = session(tab)
    tab.toggle_retired(value, "1 · cat")
    res = tab.save_arm(value, "1 · cat", "a grey cat", "", "cat", "")
    assert "New version of retired arm 1: arm 3, also retired" in res[-1], res[-1]
    rows = {r[0]: r for r in res[0]}
    assert rows[3][2] == "a grey cat" and rows[3][-1] == rows[1][-1] == "retired"
    assert {j.arm_id for j in tab.svc.plan_round(1, k=4)} == {2}


def test_bad_input_is_reported_in_the_status(tab):
    value = session(tab)
    assert "ps-error" in tab.add_arm(value, "a {red|blue", "", "", "")[-1]
    assert "JSON object" in tab.add_arm(value, "x", "", "", "[1]")[-1]
    assert "JSON object" in tab.create_session("s", "{nope", None, None, 0, 4, False)[1]
    assert "choose a session first" in tab.run_round(None, 4, None, False)[-1]
    assert "no session with id 99" in tab.run_round("99 · ghost", 4, None, False)[-1]
    assert "round_size must be an integer from 1 to 256" in tab.run_round(value, 999, None, False)[-1]
    assert "choose an arm" in tab.save_arm(value, "(new arm)", "x", "", "", "")[-1]


def test_interrupted_round_records_what_was_made(tab, tmp_path):
    value = session(tab)
    tab.generate_fn = FakeGenerator(tmp_path / "data" / "images", stop_after=1)
    out = tab.run_round(value, 4, None, False)
    assert "1 image(s) (3 not generated: interrupted)" in out[-1]
    assert len(tab.svc.images(1)) == 1


def test_find_best_mode_shows_the_stopping_verdict_and_slots(tab):
    value = session(tab, mode="find_best")
    out = tab.run_round(value, 6, None, True)
    verdict, table, density, history, slots = out[5:10]
    assert "Keep rating" in verdict and "no ratings yet" in verdict
    tab.svc.rate(tab.svc.images(1)[0]["id"], "like")
    rated = tab.stats_view(1)[0]
    assert "Keep rating" in rated and "P(best)" in rated and "more ratings" in rated and "ε = 0.03" in rated
    assert len(table) == 2 and {row[0] for row in table} == {1, 2}
    assert {r["arm_id"] for r in chart_data(density)} == {1, 2}  # charts for gr.Plot, one curve per arm
    assert chart_data(history) == []  # the round's history starts with its first rating
    assert {(r["round"], r["likes"]) for r in chart_data(tab.stats_view(1)[3])} >= {(1, 1)}
    assert "slot 1" in slots and "red" in slots and "blue" in slots
    # the session's load shows the same round
    loaded = tab.load_session(value)
    assert loaded[9] == out[3] and len(loaded[10]) == 6


def test_exports_stay_in_the_data_folder(tab):
    value = session(tab)
    out = tab.run_round(value, 2, None, False)
    tab.rate(value, out[2], out[3], "like")
    msg = tab.export("dataset", value, "ds1", "sks", "dog", 5, [], True, False)
    assert "1 image(s) with captions" in msg and "5_sks dog" in msg
    folder = tab.export_root() / "ds1" / "5_sks dog"
    assert len(list(folder.glob("*.txt"))) == 1
    for bad in ("../up", "/abs", "a/b", "..", ""):
        assert "ps-error" in tab.export("dataset", value, bad, "sks", "dog", 5, [], True, False)
    assert not (tab.data_dir().parent / "up").exists()
    assert "ps-error" in tab.export("negative", value, "neg", "wrong", "", 1, [], True, False)  # no ratings chosen
    assert "image(s)" in tab.export("negative", value, "neg", "wrong", "", 1, ["dislike", "skip"], True, True)
    assert "arm_stats.csv" in tab.export("stats", value, "st", "", "", 1, [], True, False)
    assert "already exported" in tab.export("stats", value, "st", "", "", 1, [], True, False)


def test_browse_filters_by_arm_and_rating(tab):
    value = session(tab)
    out = tab.run_round(value, 4, None, False)
    tab.rate(value, out[2], out[3], "like")
    liked = tab.browse(value, "(all arms)", "like")
    assert len(liked[0]) == 1 and "[liked]" in liked[0][0][1]
    per_arm = sum(len(tab.browse(value, f"{a} · x", "all")[0]) for a in (1, 2))
    assert per_arm == 4


def test_parse_id_and_data_dir_checks(tmp_path):
    assert parse_id("12 · name") == 12 and parse_id(3) == 3 and parse_id("(new arm)") is None
    assert parse_id(None) is None and parse_id(0) is None and parse_id(True) is None
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        check_data_dir(f)
    with pytest.raises(ValueError, match="empty"):
        check_data_dir("  ")
    assert check_data_dir(tmp_path / "new" / "dir").is_dir()


def test_provider_reopens_on_a_new_folder(tmp_path):
    folder = {"p": tmp_path / "a"}
    provider = ServiceProvider(lambda: folder["p"])
    s1 = provider()
    s1.create_session("in a")
    assert provider() is s1
    folder["p"] = tmp_path / "b"
    s2 = provider()
    assert s2 is not s1 and s2.list_sessions() == []
    provider.close()


def test_picking_a_round_thumbnail_shows_it_for_rating(tab):
    value = session(tab)
    out = tab.run_round(value, 3, None, False)
    rid = out[3]
    ids = [im["id"] for im in tab.svc.images(1, round_id=int(rid))]
    tab.rate(value, str(ids[0]), rid, "like")
    picked = tab.select_image(value, rid, 0)
    assert picked[2] == str(ids[0]) and "now liked" in picked[-1]
    res = tab.rate(value, picked[2], rid, "dislike")  # re-rating replaces the like
    assert {im["id"]: im["rating"] for im in tab.svc.images(1)}[ids[0]] == "dislike"
    assert res[2] == str(ids[1])
    assert "no longer" in tab.select_image(value, rid, 7)[-1]


class _Select:
    index = 0


@pytest.mark.parametrize("with_session", [False, True])
def test_every_event_returns_one_value_per_output(tmp_path, with_session):
    """gradio rejects a handler whose result has the wrong length: check every wired event, error paths included."""
    import inspect

    provider = ServiceProvider(tmp_path / "d", seed=0)
    gen = FakeGenerator(tmp_path / "d" / "images")
    with gr.Blocks() as blocks:
        t = build_bandit_tab(provider, gen, lambda: None, provider.data_dir, "ps_bandit")
    value = session(t) if with_session else None
    if with_session:
        t.run_round(value, 2, None, False)
    session_id = t.c["session"]._id
    if hasattr(blocks, "dependencies"):  # gradio 3: parallel lists of configs and functions
        events = [(dep["inputs"], len(dep["outputs"]), fn) for dep, fn in zip(blocks.dependencies, blocks.fns)]
    else:  # gradio 4: BlockFunction objects carry their components
        events = [([c._id for c in fn.inputs], len(fn.outputs), fn) for fn in blocks.fns.values()]
    checked = 0
    for input_ids, n_out, fn in events:
        n_in = len(input_ids)
        params = [p for p in inspect.signature(fn.fn).parameters.values() if p.default is inspect.Parameter.empty]
        args: list = [value if i == session_id else None for i in input_ids]
        for extra in params[n_in:]:
            args.append(_Select() if "evt" in extra.name else None)
        result = fn.fn(*args)
        if n_out == 0:
            continue
        got = 1 if n_out == 1 and not isinstance(result, list | tuple) else len(result)
        assert got == n_out, (fn.name, got, n_out)
        checked += 1
    assert checked >= 15
    provider.close()


def test_round_controls_and_session_options_are_saved_in_the_session(tab):
    value = session(tab)  # "more good images"
    best = next(lbl for lbl, v in MODE_LABELS.items() if v == "find_best")
    out = tab.run_round(value, 3, best, True)
    opts = tab.svc.get_session(1)["options"]
    assert (opts["mode"], opts["round_size"], opts["shared_seeds"]) == ("find_best", 3, True)
    assert "Keep rating" in out[5]  # the stopping rule's verdict follows the mode in use
    res = tab.save_session_options(value, '{"steps": 9}', "uniform Beta(1, 1)", 12)
    assert "options saved" in res[-1]
    s = tab.svc.get_session(1)
    assert (
        s["settings"] == {"steps": 9} and s["options"]["prior"] == "uniform" and s["options"]["half_life_hours"] == 12
    )
    loaded = tab.load_session(value)
    opts_at = 11 + N_STATS  # after arms ×3, k, mode, shared, current ×3, round id, gallery, stats
    assert loaded[opts_at : opts_at + 5] == ['{"steps": 9}', "uniform Beta(1, 1)", 12, 0.03, 0.95]
    assert loaded[opts_at + 5]["value"] == "pooled"  # learn from
    assert "ps-error" in tab.save_session_options(value, "{}", None, -5)[-1]
    res = tab.save_session_options(value, '{"steps": 9}', "uniform Beta(1, 1)", 12, 0.1, 0.9)
    assert "options saved" in res[-1] and "ε = 0.1" in res[0]
    assert tab.load_session(value)[opts_at + 3 : opts_at + 5] == [0.1, 0.9]
    bad = tab.save_session_options(value, "{}", None, 0, 0.9, 0.9)[-1]
    assert "ps-error" in bad and "epsilon" in bad


def test_a_failing_generator_is_reported_and_nothing_is_recorded(tab):
    value = session(tab)

    def broken(jobs, progress=None):
        raise RuntimeError("CUDA out of memory")

    tab.generate_fn = broken
    out = tab.run_round(value, 2, None, False)
    assert "failed: RuntimeError: CUDA out of memory" in out[-1] and "ps-error" in out[-1]
    assert tab.svc.images(1) == []


def _change_handler(blocks, component):
    """The function of `component`'s change event (gradio 3: parallel lists; gradio 4: BlockFunction targets)."""
    if hasattr(blocks, "dependencies"):
        for dep, fn in zip(blocks.dependencies, blocks.fns):
            targets = [t[0] if isinstance(t, list | tuple) else t for t in dep["targets"]]
            if component._id in targets and dep.get("trigger", "change") == "change":
                return fn.fn
    for fn in getattr(blocks, "fns", {}).values():
        if (component._id, "change") in [tuple(t) for t in fn.targets]:
            return fn.fn
    raise LookupError("no change event")


def test_a_moved_aside_database_shows_a_notice_until_acknowledged_in_the_tab(tmp_path):
    data = tmp_path / "d"
    provider = ServiceProvider(data, seed=0)
    with gr.Blocks() as blocks:
        t = build_bandit_tab(provider, FakeGenerator(data / "images"), None, provider.data_dir, "ps_bandit")
    value = session(t)
    assert not t.c["store_notice"].visible
    provider.close()
    (data / DB_FILENAME).write_bytes(b"a damaged disk block " * 300)  # damaged while the page is open
    status = t.load_session(value)[-1]
    backup = unacknowledged_backups(data)[0]
    assert "ps-error" in status and str(backup) in status
    for handler_out in (t.rate(value, "1", "1", "like"), t.create_session("x", "{}", None, None, 0, 4, False)):
        assert str(backup) in handler_out[-1]  # never a new, empty database behind the user's back
    # the status line changed: its change event shows the notice and the button
    notice, button = _change_handler(blocks, t.c["status"])()
    assert notice["visible"] and str(backup) in notice["value"] and button["visible"]
    notice, button, status = t.acknowledge_store()
    assert not notice["visible"] and not button["visible"]
    assert "Acknowledged" in status and str(backup) in status
    assert "Created session 1" in t.create_session("fresh", "{}", None, None, 0, 4, False)[1]
    assert backup.exists()
    provider.close()


def test_the_notice_is_on_the_page_when_it_starts_with_an_unacknowledged_backup(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / f"{DB_FILENAME}.corrupt-20260101-000000").write_bytes(b"old ratings")
    provider = ServiceProvider(data)
    with gr.Blocks():
        t = build_bandit_tab(provider, None, None, provider.data_dir, "ps_bandit")
    assert t.c["store_notice"].visible and t.c["store_ack"].visible
    assert "corrupt-20260101-000000" in t.c["status"].value  # the start-up error names it too
    assert "Acknowledged" in t.acknowledge_store()[-1]
    assert provider().list_sessions() == []
    provider.close()


def test_two_raters_in_the_tab_each_rate_their_own_and_see_each_other(tab):
    value = session(tab, mode="uniform")
    out = tab.run_round(value, 4, None, False)
    first, rid = out[2], out[3]
    shown_to_ann = tab.rate(value, first, rid, "like", rater_value="ann")
    assert "by ann" in shown_to_ann[-1] and shown_to_ann[2] != first  # ann moves on to her next image
    # bob opens the tab: the image ann rated is still waiting for him, with ann's rating in its caption
    bob = tab.rater_changed(value, rid, " bob ")
    assert bob[2] == first and "Rating as bob" in bob[-1]
    assert "ann liked" in bob[1] and "raters disagree" not in bob[1]
    after = tab.rate(value, first, rid, "dislike", rater_value="bob")
    assert "by bob" in after[-1]
    caption = tab.caption(tab.svc.get_image(int(first)), 3)
    assert "ann liked · bob disliked" in caption and "raters disagree" in caption
    # the browser's "disagree" filter finds it, and its label shows each rater's rating
    gallery, status = tab.browse(value, "(all arms)", "disagree", "bob")
    assert len(gallery) == 1 and "ann: like, bob: dislike" in gallery[0][1] and "1 image(s)" in status
    assert len(tab.browse(value, "(all arms)", "like", "ann")[0]) == 1
    assert tab.browse(value, "(all arms)", "like", "bob")[0] == []
    # bob's undo takes back bob's rating only (same page, same client)
    undone = tab.undo(value, rid, client="tab:x", rater_value="bob")
    assert "Nothing to undo" in undone[-1]  # bob's rating came from another client
    undone = tab.undo(value, rid, rater_value="bob")
    assert undone[2] == first and tab.svc.get_image(int(first))["ratings"] == {"ann": "like"}
    tab.rate(value, first, rid, "dislike", rater_value="bob")
    # statistics: pooled by default, each rater's view on request, agreement shown
    stats = tab.stats_view(1)
    assert len(stats) == N_STATS and stats[7]["value"] == "pooled"
    assert stats[7]["choices"] == ["pooled", "ann", "bob"]
    assert "ann × bob: κ = 0.00 on 1 image(s)" in stats[6]  # p_o = 0 = p_e (one liked all, one disliked all)
    assert "only ann liked 1" in stats[6] and "the session learns from <b>pooled</b>" in stats[6]
    ann_view = tab.stats_view(1, "ann")
    assert ann_view[7]["value"] == "ann" and sum(row[4] for row in ann_view[1]) == 1  # ann's like
    assert sum(row[5] for row in ann_view[1]) == 0 and sum(row[5] for row in stats[1]) == 1
    assert "rater ann" in chart_title(ann_view[2])
    refreshed = tab.refresh_view(value, rid, "bob", "bob")
    assert refreshed[1 + 7]["value"] == "bob"  # the chosen view stays after a rating's refresh
    # the session learns from one rater (Session options)
    saved = tab.save_session_options(value, '{"steps": 3}', None, 0, None, None, "ann")
    assert "options saved" in saved[-1] and tab.svc.get_session(1)["options"]["learn_from"] == "ann"
    assert saved[7]["value"] == "ann"  # the statistics now show what it learns from
    assert tab.load_session(value, "bob")[11 + N_STATS + 5]["value"] == "ann"
    assert "ps-error" in tab.save_session_options(value, "{}", None, 0, None, None, "a\nb")[-1]
    assert "must not be" in tab.rate(value, first, rid, "like", rater_value="pooled")[-1]
    # exports: anyone's likes, or the Rater's
    assert "1 image(s)" in tab.export("dataset", value, "anyone", "sks", "dog", 1, [], True, False, "anyone's ratings")
    whose = "the Rater's ratings (box above)"
    assert "0 image(s)" in tab.export("dataset", value, "bobs", "sks", "dog", 1, [], True, False, whose, "bob")
    assert "1 image(s)" in tab.export("negative", value, "bneg", "wrong", "", 1, ["dislike"], True, False, whose, "bob")


def test_plots_are_interactive_altair_charts_with_any_script_in_labels(tab):
    alt = pytest.importorskip("altair", reason="gradio 4.40 (Forge Neo) does not install altair")

    value = session(tab, mode="uniform")
    tab.svc.edit_arm(1, label="猫の絵 (ねこ)")
    out = tab.run_round(value, 4, None, False)
    for im in tab.svc.images(1):
        tab.rate(value, str(im["id"]), out[3], "like" if im["arm_id"] == 1 else "dislike")
    verdict, _table, density, history, _slots, likes, _raters, _view = tab.stats_view(1)
    for chart in (density, history, likes):
        assert isinstance(chart, alt.TopLevelMixin)
        assert plot_type(gr.Plot().postprocess(chart)) == "altair"  # what gradio sends to the page (3.41 and 4.x)
    assert "1 猫の絵 (ねこ)" in {r["arm"] for r in chart_data(density)}  # the label as written, drawn by the browser
    spec = density.to_dict()
    params = spec.get("params", []) + [p for layer in spec["layer"] for p in layer.get("params", [])]
    assert {"density_hover", "density_legend"} <= {p["name"] for p in params}  # hover highlights, legend filters
    assert any(p["select"].get("on") == "mouseover" for p in params if isinstance(p["select"], dict))
    assert [t["field"] for t in spec["layer"][1]["encoding"]["tooltip"]] == ["arm", "like_rate", "density"]
    rows = chart_data(likes)
    this_round = [r for r in rows if r["series"] == "this round"]
    assert this_round == [{"round": 1, "series": "this round", "per_100": 50.0, "likes": 2, "ratings": 4}]
    assert tab.svc.history(1)["likes_per_100"][0]["window_per_100"] == 50.0


def test_without_altair_the_plots_are_matplotlib_figures_for_gr_plot(tab, monkeypatch):
    """gradio 4.40 does not require altair: where it is missing (a Forge install) the same plots come as matplotlib
    figures, which gr.Plot shows on both gradio versions."""
    from matplotlib.figure import Figure

    from lib_ext.bandit import plots

    value = session(tab, mode="uniform")
    tab.svc.edit_arm(1, label="猫")
    out = tab.run_round(value, 4, None, False)
    for im in tab.svc.images(1):
        tab.rate(value, str(im["id"]), out[3], "like" if im["arm_id"] == 1 else "dislike")
    monkeypatch.setattr(plots, "alt", None)
    _v, _t, density, history, _s, likes, _r, _view = tab.stats_view(1)
    for fig in (density, history, likes):
        assert isinstance(fig, Figure) and plot_type(gr.Plot().postprocess(fig)) == "matplotlib"
    legend = [t.get_text() for t in density.axes[0].get_legend().get_texts()]
    assert legend == ["1 猫", "2 a {red|blue} dog"]
    assert [line.get_label() for line in likes.axes[0].get_lines()] == ["this round", "latest 100 ratings"]
    assert list(likes.axes[0].get_lines()[0].get_ydata()) == [50.0]
