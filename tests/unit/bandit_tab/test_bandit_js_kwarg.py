"""The round button's page script reaches gradio also when a host wraps event listeners (Forge Neo)."""

from __future__ import annotations

import gradio as gr

from lib_ext.bandit.ui import RUN_JS, js_kwarg


class EventWrapper:
    """What Forge Neo puts in place of each component event: a callable taking anything, `_js` mapped to `js`."""

    def __call__(self, *args, **kwargs):
        return kwargs


def test_a_wrapped_listener_gets_the_keyword_of_this_gradio():
    expected = "_js" if gr.__version__.startswith("3.") else "js"
    assert js_kwarg(EventWrapper(), RUN_JS) == {expected: RUN_JS}


def test_plain_listeners_keep_their_own_keyword():
    def gradio3(fn=None, inputs=None, outputs=None, _js=None): ...
    def gradio4(fn=None, inputs=None, outputs=None, js=None): ...
    def neither(fn=None): ...

    assert js_kwarg(gradio3, "x") == {"_js": "x"}
    assert js_kwarg(gradio4, "x") == {"js": "x"}
    assert js_kwarg(neither, "x") == {}
