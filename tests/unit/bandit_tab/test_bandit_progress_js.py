"""The round button's page-side step (javascript/promptscope_bandit.js + ui.RUN_JS), run in node against a minimal
page: in A1111 it starts A1111's progress bar on a fresh task id and puts the id into the task-id input; without
A1111's functions (the standalone app), or without our script, the inputs go through unchanged."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lib_ext.bandit.ui import RUN_JS, TASK_ID_INPUT

REPO = Path(__file__).resolve().parents[3]
NODE = shutil.which("node")

HARNESS = r"""
const vm = require("vm");
const fs = require("fs");
const [scripts, runJs, a1111, loadOurs] = JSON.parse(process.argv[process.argv.length - 1]);
const gallery = { id: "ps_bandit_round_gallery", parentNode: { id: "ps_bandit_results" } };
const elements = { ps_bandit_round_gallery: gallery };
const calls = [];
const ctx = {
  console,
  setInterval: () => 0,
  clearInterval: () => {},
  document: {
    addEventListener: () => {},
    querySelector: (sel) => elements[sel.replace(/^#/, "")] || null,
  },
};
ctx.window = ctx;
if (a1111) {
  ctx.randomId = () => "task(fixed)";
  ctx.requestProgress = (id, container, gal, atEnd) =>
    calls.push([id, container.id, gal && gal.id, typeof atEnd]);
}
vm.createContext(ctx);
if (loadOurs) for (const path of scripts) vm.runInContext(fs.readFileSync(path, "utf8"), ctx, { filename: path });
// gradio 3.41 (Blocks.svelte) runs an event's _js over the inputs' values followed by the outputs' values
const fn = vm.runInContext(
  "(async (__fn_args) => { let result = await (" + runJs + ")(...__fn_args); return result; })", ctx);
fn(["1 · s", 4, "mode", false, "", "out1", null]).then((res) => console.log(JSON.stringify({ res, calls })));
"""


def run_page(a1111: bool, load_ours: bool = True) -> dict:
    scripts = [str(REPO / "javascript" / "promptscope.js"), str(REPO / "javascript" / "promptscope_bandit.js")]
    out = subprocess.run(
        [NODE, "-e", HARNESS, json.dumps([scripts, RUN_JS, a1111, load_ours])],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def test_in_a1111_the_round_gets_a_task_id_and_a1111s_progress_bar():
    got = run_page(a1111=True)
    assert got["res"][TASK_ID_INPUT] == "task(fixed)"
    assert got["res"][:TASK_ID_INPUT] == ["1 · s", 4, "mode", False]
    # bar above the round gallery (in its column), live preview over it
    assert got["calls"] == [["task(fixed)", "ps_bandit_round_gallery", "ps_bandit_round_gallery", "function"]]


def test_without_a1111_or_without_our_script_the_inputs_pass_unchanged():
    for got in (run_page(a1111=False), run_page(a1111=True, load_ours=False)):
        assert got["res"] == ["1 · s", 4, "mode", False, "", "out1", None] and got["calls"] == []
