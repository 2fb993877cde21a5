"""Issue 13's hostile client against the bandit API A1111 mounts in `on_app_started` (the v1.10.1 double), over
A1111's settings rules (its sampler registry, 64–2048 px). The same checks run on the standalone app in
tests/unit/bandit_tab/test_bandit_api_hostile.py. A round whose arm has settings stored before they were checked
still generates the other arms' images through A1111's pipeline."""

from __future__ import annotations

import html
import sys
from pathlib import Path

import pytest

from tests import bandit_api_checks as checks

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(booted_webui, tmp_path):
    fake_webui, _demo, app = booted_webui
    b = sys.modules["promptscope_a1111.bandit_tab"]
    fake_webui.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    return checks.Api(app)


def test_ids_out_of_range_on_any_route_are_404_or_422(api):
    sid, _arm = checks.seed_session(api, {"steps": 2})
    checks.check_ids_never_500(api, sid)


def test_request_bodies_are_strict(api):
    checks.check_bodies_are_strict(api, *checks.seed_session(api, {"steps": 2}))


def test_any_json_in_any_body_field_or_setting_is_never_a_500(api):
    checks.check_bodies_never_500(api, *checks.seed_session(api, {"steps": 2}))


def test_generation_settings_are_validated_for_a1111(api):
    sid, arm = checks.seed_session(api, {"steps": 2})
    good = {"steps": 3, "cfg_scale": 5.5, "width": 64, "height": 128, "sampler_name": "Euler", "scheduler": "Karras"}
    host_bad = [{"width": 32}, {"sampler_name": "Euler (toy)"}, {"height": 100}, {"denoising_strength": -1}]
    checks.check_settings_are_validated(api, sid, arm, good, host_bad)


def test_patching_a_retired_arm_keeps_it_retired(api):
    sid, _arm = checks.seed_session(api, {"steps": 2})
    checks.check_patching_a_retired_arm_keeps_it_retired(api, sid)


def test_a_stored_bad_arm_fails_alone_in_an_a1111_round(api, sd_model):
    b = sys.modules["promptscope_a1111.bandit_tab"]
    tab = b.current_tab
    uniform = "uniform sweep (like an X/Y/Z grid)"  # every arm in every round
    value = tab.create_session("a1111", '{"steps": 2, "width": 64, "height": 64}', uniform, None, 0, 4, False)
    value = value[0]["value"]
    tab.add_arm(value, "a cat", "", "", "")
    tab.add_arm(value, "a dog", "", "", "")
    svc = b.provider()
    # settings written before they were checked: A1111 would fail every job of this arm ("bad sampler name")
    svc.store.conn.execute("UPDATE arms SET settings = ? WHERE id = 2", ('{"sampler_name": "Nope"}',))
    from modules import call_queue

    with call_queue.queue_lock:
        out = tab.run_round(value, 4, None, False)
    status = html.unescape(out[-1])
    assert "Round 1: 2 image(s)" in status and "arm 2's settings" in status and "'Nope'" in status, status
    assert [im["arm_id"] for im in svc.images(1)] == [1, 1]


def test_a_webui_without_a_sampler_registry_accepts_any_sampler_name(api, monkeypatch):
    from modules import sd_samplers

    r = api.request("POST", "/sessions", json={"name": "s", "settings": {"sampler_name": "Forge's own"}})
    assert r.status_code == 422 and "Euler" in r.json()["detail"]  # the registry's names are offered
    monkeypatch.delattr(sd_samplers, "all_samplers_map")
    r = api.request("POST", "/sessions", json={"name": "s", "settings": {"sampler_name": "Forge's own"}})
    assert r.status_code == 201, r.text


def test_raters_rate_filter_undo_and_steer_through_the_api(api, tmp_path):
    b = sys.modules["promptscope_a1111.bandit_tab"]
    ImageResult = sys.modules[type(b.provider()).__module__].ImageResult  # the library as A1111 loaded it
    sid, _arm = checks.seed_session(api, {"steps": 2})
    (tmp_path / "imgs").mkdir()

    def generate(jobs):
        out = []
        for j in jobs:
            path = tmp_path / "imgs" / f"{j.index}.png"
            path.write_bytes(b"png %d" % j.seed)
            out.append(ImageResult(j, str(path)))
        return out

    res = b.provider().run_round(sid, generate, k=4)
    checks.check_raters(api, sid, [i["id"] for i in res["images"]], res["round"]["id"])
