// PromptScope: shared helpers for the WebUI page. Each feature's script registers its own handlers here.
(function () {
    "use strict";
    const root = () => (typeof gradioApp === "function" ? gradioApp() : document);
    const onLoaded = window.onUiLoaded || function (fn) { document.addEventListener("DOMContentLoaded", fn); };

    // Keyboard shortcuts are bound per element id; a shortcut fires only while that element is visible and
    // the focus is not in a text field, so typing a prompt never triggers one.
    const bindings = [];
    window.promptscopeBindKeys = function (elemId, keymap) {
        bindings.push({ elemId, keymap });
    };

    function isTyping(target) {
        const tag = (target && target.tagName) || "";
        return tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT" || (target && target.isContentEditable);
    }

    onLoaded(function () {
        document.addEventListener("keydown", function (event) {
            if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event.target)) return;
            for (const { elemId, keymap } of bindings) {
                const el = root().querySelector("#" + elemId);
                if (!el || el.offsetParent === null) continue;
                const buttonId = keymap[event.key];
                if (!buttonId) continue;
                const button = root().querySelector("#" + buttonId);
                if (button) {
                    event.preventDefault();
                    button.click();
                }
                return;
            }
        });
    });
})();
