"""Issue 13's hostile client against the standalone app's bandit API (the routes the app mounts on its FastAPI app
through the tab's app hooks, over the toy host's settings rules). The same checks run on the A1111 double in
tests/host/test_a1111_bandit_api_hostile.py."""

from __future__ import annotations

import gradio as gr
import pytest
from fastapi import FastAPI

from lib_ext.app import panel_bandit
from lib_ext.app.panels import TabContext
from lib_ext.toyworld.host import SAMPLER_NAMES
from tests import bandit_api_checks as checks


@pytest.fixture
def api(host, tmp_path):
    hooks: list = []
    with gr.Blocks():
        panel_bandit.build(TabContext(host=host, data_dir=tmp_path / "bandit", app_hooks=hooks))
    app = FastAPI()
    for hook in hooks:
        hook(None, app)
    return checks.Api(app)


def test_ids_out_of_range_on_any_route_are_404_or_422(api):
    sid, _arm = checks.seed_session(api, {"steps": 2})
    checks.check_ids_never_500(api, sid)


def test_request_bodies_are_strict(api):
    checks.check_bodies_are_strict(api, *checks.seed_session(api, {"steps": 2}))


def test_any_json_in_any_body_field_or_setting_is_never_a_500(api):
    checks.check_bodies_never_500(api, *checks.seed_session(api, {"steps": 2}))


def test_generation_settings_are_validated_for_the_toy_host(api):
    sid, arm = checks.seed_session(api, {"steps": 2})
    good = {"steps": 3, "cfg_scale": 5, "width": 32, "height": 32, "sampler_name": SAMPLER_NAMES[-1]}
    host_bad = [{"width": 64}, {"sampler_name": "Euler a (A1111)"}, {"scheduler": "Karras"}, {"batch_size": 2}]
    checks.check_settings_are_validated(api, sid, arm, good, host_bad)


def test_patching_a_retired_arm_keeps_it_retired(api):
    sid, _arm = checks.seed_session(api, {"steps": 2})
    checks.check_patching_a_retired_arm_keeps_it_retired(api, sid)


def test_raters_rate_filter_undo_and_steer_through_the_api(api, tmp_path):
    from lib_ext.bandit.service import BanditService, ImageResult

    sid, _arm = checks.seed_session(api, {"steps": 2})
    (tmp_path / "imgs").mkdir()

    def generate(jobs):
        out = []
        for j in jobs:
            path = tmp_path / "imgs" / f"{j.index}.png"
            path.write_bytes(b"png %d" % j.seed)
            out.append(ImageResult(j, str(path)))
        return out

    with BanditService(tmp_path / "bandit") as svc:  # a second service on the app's data folder
        res = svc.run_round(sid, generate, k=4)
    checks.check_raters(api, sid, [i["id"] for i in res["images"]], res["round"]["id"])
