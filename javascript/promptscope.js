// PromptScope: shared helpers for the WebUI page. Each feature's script registers its own handlers here.
(function () {
    "use strict";
    if (window.promptscopeBindKeys) return; // loaded twice (a reloaded page template): keep the first listener

    const root = () => (typeof gradioApp === "function" ? gradioApp() : document);

    // Keyboard shortcuts are bound per element id; a shortcut fires only while that element is visible and
    // the focus is not in a text field, so typing a prompt never triggers one. A keymap maps a key (as in
    // KeyboardEvent.key; letters match either case) to a button's element id, or to a function(event) that
    // returns true when it handled the key.
    const bindings = [];
    window.promptscopeBindKeys = function (elemId, keymap) {
        bindings.push({ elemId, keymap });
    };

    const TEXT_INPUTS = new Set(["text", "search", "email", "password", "url", "tel", "number", ""]);

    function isTyping(target) {
        if (!target) return false;
        const tag = target.tagName || "";
        if (tag === "INPUT") return TEXT_INPUTS.has((target.getAttribute("type") || "").toLowerCase());
        return tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
    }

    function visible(el) {
        return !!el && el.offsetParent !== null && el.getClientRects().length > 0;
    }

    window.promptscopeClick = function (buttonId) {
        const button = root().querySelector("#" + buttonId);
        if (!button || button.disabled) return false;
        button.click();
        return true;
    };

    // Registered at once (not on load): the listener only looks elements up when a key is pressed, and a
    // script injected after DOMContentLoaded must still work. Shadow-DOM pages report the host as target, so
    // the focused element inside it is checked too.
    document.addEventListener("keydown", function (event) {
        if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing || event.repeat) return;
        const active = root().activeElement || document.activeElement;
        if (isTyping(event.target) || isTyping(active)) return;
        for (const { elemId, keymap } of bindings) {
            if (!visible(root().querySelector("#" + elemId))) continue;
            const action = keymap[event.key] || keymap[(event.key || "").toLowerCase()];
            if (!action) continue;
            const handled = typeof action === "function" ? action(event) : window.promptscopeClick(action);
            if (handled) event.preventDefault();
            return;
        }
    });
})();
