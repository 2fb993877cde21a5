// PromptScope seed bandit: rate with the keyboard. L / → like, D / ← dislike, S / ↓ skip, U undo.
// Active only while the tab is visible and the focus is not in a text field (promptscopeBindKeys).
(function () {
    "use strict";
    const PREFIX = "ps_bandit";
    const root = () => (typeof gradioApp === "function" ? gradioApp() : document);

    // One key press rates the image on show. Until the page shows the next image (the caption's image id
    // changes) further rating keys are ignored, so a fast double press cannot rate the same image twice or
    // rate an image nobody saw. A lost response unlocks after a few seconds.
    let lock = null;
    const LOCK_MS = 4000;

    function shownId() {
        const el = root().querySelector("#" + PREFIX + "_caption [data-image-id]");
        return el ? el.getAttribute("data-image-id") : null;
    }

    function rate(action) {
        return function () {
            const id = shownId();
            if (lock && lock.id === id && Date.now() - lock.time < LOCK_MS) return true; // swallow the key
            if (!id) return false; // nothing on show
            if (!window.promptscopeClick(PREFIX + "_" + action)) return false;
            lock = { id: id, time: Date.now() };
            return true;
        };
    }

    function undo() {
        lock = null;
        return window.promptscopeClick(PREFIX + "_undo");
    }

    function bind() {
        if (!window.promptscopeBindKeys) return false;
        window.promptscopeBindKeys(PREFIX, {
            l: rate("like"),
            ArrowRight: rate("like"),
            d: rate("dislike"),
            ArrowLeft: rate("dislike"),
            s: rate("skip"),
            ArrowDown: rate("skip"),
            u: undo,
        });
        return true;
    }

    // promptscope.js normally loads first (A1111 sorts scripts by name); wait for it otherwise.
    if (!bind()) {
        const timer = setInterval(function () {
            if (bind()) clearInterval(timer);
        }, 200);
    }
})();
