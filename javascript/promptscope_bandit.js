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

    // "Generate round" in A1111: give the round a task id and show A1111's own progress bar, live preview and
    // ETA for it (javascript/progressbar.js), as A1111's txt2img button does. The id goes to the handler in the
    // hidden task-id input (args[taskIndex]); A1111's wrap_gradio_gpu_call then tracks the round under it.
    // Without A1111's functions (the standalone app) the inputs go through unchanged.
    window.promptscopeBanditSubmit = function (taskIndex, args) {
        const res = Array.from(args);
        if (typeof randomId !== "function" || typeof requestProgress !== "function") return res;
        // The bar goes above the round's gallery (at the top of its column), the live preview over the gallery.
        const gallery = root().querySelector("#" + PREFIX + "_round_gallery");
        if (!gallery || !gallery.parentNode) return res;
        const id = randomId();
        try {
            requestProgress(id, gallery, gallery, function () {});
        } catch (error) {
            console.error("PromptScope: A1111's progress bar failed", error);
            return res;
        }
        res[taskIndex] = id;
        return res;
    };

    // The Rater box: who rates in this browser, remembered in localStorage. On page load the stored name is put
    // into the box (an "input" event tells gradio, whose change event then shows the next image pending for that
    // rater); every edit is stored. Watched by a timer because gradio renders (and may re-render) the box late.
    const RATER_KEY = "promptscope.bandit.rater";

    function storage() {
        try {
            return window.localStorage;
        } catch (error) {
            return null; // storage blocked (private mode, file://): the box still works, it is just not remembered
        }
    }

    function watchRater() {
        const box = root().querySelector("#" + PREFIX + "_rater input, #" + PREFIX + "_rater textarea");
        if (!box || box.dataset.promptscopeRater) return;
        box.dataset.promptscopeRater = "1";
        const store = storage();
        const saved = store ? store.getItem(RATER_KEY) : null;
        if (saved && !box.value) {
            box.value = saved;
            box.dispatchEvent(new Event("input", { bubbles: true }));
        }
        box.addEventListener("input", function () {
            const s = storage();
            if (s) s.setItem(RATER_KEY, box.value.trim());
        });
    }

    setInterval(watchRater, 500);
    window.promptscopeBanditRaterKey = RATER_KEY;

    // "Generate ahead": while the tab shows a running queue, refresh its progress and ETA every few seconds (a
    // click on the tab's ↻ button: a short, unqueued request, so it never waits behind a generating round).
    const QUEUE_REFRESH_MS = 3000;
    setInterval(function () {
        if (document.hidden) return;
        const running = root().querySelector("#" + PREFIX + "_q_progress .ps-queue[data-state='running']");
        if (running && running.offsetParent !== null) window.promptscopeClick && window.promptscopeClick(PREFIX + "_q_watch");
    }, QUEUE_REFRESH_MS);

    // promptscope.js normally loads first (A1111 sorts scripts by name); wait for it otherwise.
    if (!bind()) {
        const timer = setInterval(function () {
            if (bind()) clearInterval(timer);
        }, 200);
    }
})();
