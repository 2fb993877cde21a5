"""PROMPTSCOPE_BANDIT_DIR chooses the seed bandit's data folder over the setting, from the first use on (the tab's
build at start-up already opens the store): a test server never writes into the user's outputs."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.host.test_a1111_bandit import REPO, get


def test_env_folder_wins_from_start_up_on(fake_webui, tmp_path, monkeypatch):
    m = fake_webui
    env_dir = tmp_path / "env-bandit"
    monkeypatch.setenv("PROMPTSCOPE_BANDIT_DIR", str(env_dir))
    from modules import initialize

    _demo, app = initialize.boot(str(REPO))
    try:
        b = sys.modules["promptscope_a1111.bandit_tab"]
        default = Path(m.shared.opts.outdir_txt2img_samples).parent / "promptscope-bandit"
        # the build listed the sessions of the env folder: its store exists, the default folder was never made
        assert (env_dir / "seed_bandit.sqlite3").is_file()
        assert not default.exists()
        assert b.data_dir() == env_dir.resolve()
        m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "from-setting")
        assert b.data_dir() == env_dir.resolve()  # the setting does not move a pinned folder
        b.current_tab.create_session("env", '{"steps": 2}', None, None, 0, 2, False)
        r = get(app, "/sessions")
        assert r.status_code == 200 and [s["name"] for s in r.json()] == ["env"]
        assert not (tmp_path / "from-setting").exists()
        monkeypatch.setenv("PROMPTSCOPE_BANDIT_DIR", "  ")  # blank: the setting again
        assert b.data_dir() == (tmp_path / "from-setting").resolve()
        assert "PROMPTSCOPE_BANDIT_DIR" in m.shared.opts.data_labels[b.OPT_DIR].label
    finally:
        from promptscope_webui import unload_promptscope

        unload_promptscope(m)
