// PromptScope seed bandit: rate with the keyboard. L / → like, D / ← dislike, S / ↓ skip, U undo.
// Active only while the tab is visible and the focus is not in a text field (promptscopeBindKeys).
// The rating view (lib_ext/bandit/ui_fast.py) rates without a gradio round-trip; see "The rating view" below.
(function () {
    "use strict";
    const PREFIX = "ps_bandit";
    const root = () => (typeof gradioApp === "function" ? gradioApp() : document);
    let fast = { on: false }; // the rating view, once started

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
            if (fast.on) return fast.act(action);
            const id = shownId();
            if (lock && lock.id === id && Date.now() - lock.time < LOCK_MS) return true; // swallow the key
            if (!id) return false; // nothing on show
            if (!window.promptscopeClick(PREFIX + "_" + action)) return false;
            lock = { id: id, time: Date.now() };
            return true;
        };
    }

    function undo() {
        if (fast.on) return fast.act("undo");
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

    // ---- The rating view -----------------------------------------------------------------------------------------
    // The next AHEAD images of the rater's queue are loaded and decoded before they are needed (GET …/upcoming); a
    // key press puts the next one on show in its own event handler (the decoded <img> element itself goes into the
    // frame, so the next frame paints it) and only then queues the rating. Ratings, undos and "mark the rest" go to
    // the server one at a time, in order, from an outbox that is kept in localStorage and retried until the server
    // answers (a page closed with unsent ratings hands them to the next page that opens). The server stays the
    // source of truth: an undo's answer that differs from what the page expected re-reads the queue from it.
    const AHEAD = 10; // images kept loaded ahead of the one on show (a server starved of CPU for a second)
    const BACK = 30; // rated images kept loaded for undo
    const SYNC_MS = 1500; // statistics and gallery refresh after the ratings pause this long
    const POLL_MS = 3000; // nothing to rate: look for new images (a generate-ahead queue) this often
    const OUTBOX_KEY = "promptscope.bandit.outbox.";
    const ORPHAN_MS = 15000; // an outbox not touched for this long belongs to a page that was closed

    // After the frame that shows the next image: when the page is idle (at the latest 200 ms on).
    function afterPaint(fn) {
        if (typeof requestIdleCallback === "function") requestIdleCallback(fn, { timeout: 200 });
        else setTimeout(fn, 20);
    }

    function Fast(el) {
        this.on = true;
        this.el = el;
        this.api = el.getAttribute("data-api") || "/promptscope/v1/bandit";
        this.client = "page:" + Math.random().toString(36).slice(2) + Date.now().toString(36);
        this.session = null;
        this.rater = "";
        this.viewKey = null; // the data-view of the gradio caption last taken over
        this.shown = null; // entry on show: {data, img, ready, atts}
        this.ahead = [];
        this.history = []; // this page's actions, newest last: {kind: "rate", entry} | {kind: "mark", round}
        this.outbox = [];
        this.sending = false;
        this.epoch = 0; // bumped when the queue is re-read: late answers for an older queue are dropped
        this.fetching = false;
        this.pending = 0;
        this.lastRound = null;
        this.syncTimer = null;
        this.pollTimer = null;
        this.backoff = 500;
        this.error = false;
        const self = this;
        el.querySelectorAll("button[data-action]").forEach(function (b) {
            b.addEventListener("click", function () {
                self.act(b.getAttribute("data-action"));
            });
        });
        this.adoptOrphans();
        this.pump();
    }

    Fast.prototype.part = function (name) {
        return this.el.querySelector(".ps-fast-" + name);
    };

    Fast.prototype.url = function (path, query) {
        const q = Object.keys(query || {})
            .filter((k) => query[k] !== null && query[k] !== undefined && query[k] !== "")
            .map((k) => encodeURIComponent(k) + "=" + encodeURIComponent(query[k]));
        return this.api + path + (q.length ? "?" + q.join("&") : "");
    };

    Fast.prototype.status = function (text, error) {
        const s = this.part("status");
        if (!s) return;
        s.textContent = text || "";
        s.classList.toggle("ps-error", !!error);
        this.error = !!error;
    };

    // An image of the queue: its <img> starts loading now and is decoded off the main thread.
    Fast.prototype.entry = function (data) {
        const self = this;
        const img = new Image();
        img.alt = "image " + data.id;
        img.setAttribute("data-image-id", String(data.id));
        img.src = this.url("/images/" + data.id + "/file");
        const e = { data: data, img: img, ready: false, atts: [] };
        const done = function () {
            e.ready = true;
            if (self.shown === e) self.caption();
        };
        (img.decode ? img.decode() : Promise.resolve()).then(done, done); // a missing file shows its alt text
        e.atts = (data.attachments || []).map(function (a, i) {
            const att = new Image();
            att.alt = att.title = a.caption || "";
            att.src = self.url("/images/" + data.id + "/attachments/" + i);
            return att;
        });
        return e;
    };

    Fast.prototype.holds = function (id) {
        if (this.shown && this.shown.data.id === id) return true;
        if (this.ahead.some((e) => e.data.id === id)) return true;
        return this.outbox.some((m) => m.kind === "rate" && m.image === id);
    };

    Fast.prototype.caption = function () {
        const cap = this.part("caption");
        if (!cap) return;
        const e = this.shown;
        cap.setAttribute("data-image-id", e ? String(e.data.id) : "");
        cap.textContent = "";
        const line = (text, cls) => {
            const div = document.createElement("div");
            div.textContent = text;
            if (cls) div.className = cls;
            cap.appendChild(div);
            return div;
        };
        if (!e) {
            line(this.session ? (this.fetching ? "Loading…" : "Nothing left to rate. Generate a round or queue images.")
                : "Choose a session above.");
            return;
        }
        const d = e.data;
        const arm = "arm " + d.arm_id + (d.arm_label ? " " + d.arm_label : "");
        const b = document.createElement("b");
        b.textContent = "image " + d.id;
        const head = line(" · " + arm + " · round " + (d.round_number || "?") + " · seed " + d.seed + " · "
            + this.pending + " to rate" + (e.ready ? "" : " · loading…"));
        head.prepend(b);
        const ratings = Object.keys(d.ratings || {}).map((r) => (r || "(unnamed rater)") + " " + ({
            like: "liked", dislike: "disliked", skip: "skipped" }[d.ratings[r]] || d.ratings[r]));
        if (ratings.length) {
            const vals = Object.values(d.ratings);
            const clash = vals.includes("like") && vals.includes("dislike");
            line("ratings: " + ratings.join(" · ") + (clash ? " ⚡ raters disagree" : ""), "ps-raters");
        }
        line(d.prompt.length > 160 ? d.prompt.slice(0, 159) + "…" : d.prompt, "ps-muted");
    };

    // Put an entry on show (null: nothing). Synchronous: called in the key press's handler.
    Fast.prototype.show = function (e) {
        this.shown = e;
        const frame = this.part("frame");
        if (e) {
            frame.replaceChildren(e.img);
            this.lastRound = e.data.round_id || this.lastRound;
        } else {
            const empty = document.createElement("div");
            empty.className = "ps-fast-empty";
            empty.textContent = this.session ? (this.fetching ? "Loading…" : "Nothing to rate") : "";
            frame.replaceChildren(empty);
        }
        const att = this.part("attached");
        if (att) att.replaceChildren.apply(att, e ? e.atts : []);
        this.caption();
    };

    // Ask for more of the queue (after the last image held), until AHEAD are loaded: once half of them are used,
    // so a request brings several (fewer requests competing with the key presses for the page and the server).
    Fast.prototype.refill = function () {
        if (this.fetching || !this.session || (this.shown && this.ahead.length > AHEAD / 2)) return;
        const last = this.ahead.length ? this.ahead[this.ahead.length - 1] : this.shown;
        const after = last ? last.data.id : this.lastRated;
        const exclude = [];
        if (this.shown) exclude.push(this.shown.data.id);
        this.ahead.forEach((e) => exclude.push(e.data.id));
        this.outbox.forEach((m) => m.kind === "rate" && m.session === this.session && exclude.push(m.image));
        const n = AHEAD - this.ahead.length + (this.shown ? 0 : 1);
        this.load({ rater: this.rater, n: n, after: after, exclude: exclude.slice(-200).join(",") });
    };

    Fast.prototype.load = function (query) {
        const self = this;
        const epoch = this.epoch;
        this.fetching = true;
        fetch(this.url("/sessions/" + this.session + "/upcoming", query), { credentials: "same-origin" })
            .then((r) => r.json().then((body) => (r.ok ? body : Promise.reject(new Error(body.detail || r.status)))))
            .then(function (res) {
                if (epoch !== self.epoch) return;
                self.fetching = false;
                const marking = self.outbox.filter((m) => m.kind === "mark").map((m) => m.round);
                const unsent = self.outbox.filter((m) => m.kind === "rate" && m.session === self.session).length;
                self.pending = Math.max(0, res.pending - unsent);
                let added = 0;
                res.images.forEach(function (d) {
                    if (self.holds(d.id) || marking.includes(d.round_id)) return;
                    added += 1;
                    const e = self.entry(d);
                    if (!self.shown) self.show(e);
                    else self.ahead.push(e);
                });
                if (!self.shown) self.show(null);
                else self.caption();
                if (!added) self.idle(); // nothing new (yet): look again in a while
                else if (self.ahead.length < AHEAD / 2) self.refill();
            })
            .catch(function (err) {
                if (epoch !== self.epoch) return;
                self.fetching = false;
                self.status("⚠ could not load the next images: " + err.message + " (retrying)", true);
                setTimeout(() => epoch === self.epoch && self.refill(), 2000);
                if (!self.shown) self.show(null);
            });
    };

    // Nothing more to load: look again every few seconds while the view is on screen (images being generated).
    Fast.prototype.idle = function () {
        const self = this;
        if (this.pollTimer) return;
        this.pollTimer = setTimeout(function () {
            self.pollTimer = null;
            if (!document.hidden && self.el.offsetParent !== null && self.ahead.length < AHEAD) self.refill();
            else if (self.ahead.length < AHEAD) self.idle();
        }, POLL_MS);
    };

    // Re-read the queue from the server: `start` first (an image the tab showed, or an undone one).
    Fast.prototype.reset = function (session, rater, start) {
        const same = session === this.session && rater === this.rater;
        this.epoch += 1;
        this.fetching = false;
        this.session = session;
        this.rater = rater;
        this.ahead = [];
        if (!same) this.history = [];
        const keep = start && this.shown && this.shown.data.id === start ? this.shown : null;
        this.show(keep);
        if (!session) return;
        this.load({ rater: rater, n: AHEAD + (keep ? 0 : 1), start: keep ? null : start, after: keep ? start : null,
            exclude: this.outbox.filter((m) => m.kind === "rate" && m.session === session && m.image !== start)
                .map((m) => m.image).slice(-200).join(",") });
    };

    // The Rater box's name (what the tab's own handlers read): a change re-reads the queue for that rater, keeping
    // the image on show. Read directly, as gradio may skip change events while one is running (fast typing).
    Fast.prototype.checkRater = function () {
        const box = root().querySelector("#" + PREFIX + "_rater input, #" + PREFIX + "_rater textarea");
        const name = box ? box.value.trim() : this.rater;
        if (name !== this.rater && this.session) this.reset(this.session, name, this.shown ? this.shown.data.id : null);
        else this.rater = name;
    };

    // A button or key: like, dislike, skip, undo, mark. Returns true when the key was ours.
    Fast.prototype.act = function (action) {
        this.checkRater();
        if (action === "undo") return this.undo();
        if (action === "mark") return this.markRest();
        const e = this.shown;
        if (!e || !e.ready) return true; // nothing on show (yet): never rate an image nobody saw
        this.history.push({ kind: "rate", entry: e });
        if (this.history.length > BACK) this.history.shift();
        this.lastRated = e.data.id;
        this.pending = Math.max(0, this.pending - 1);
        this.show(this.ahead.shift() || null); // the next image first; everything else after the paint
        this.send({ kind: "rate", session: this.session, image: e.data.id, rating: action, rater: this.rater });
        return true;
    };

    Fast.prototype.undo = function () {
        if (!this.session) return false;
        const last = this.history.pop();
        const item = { kind: "undo", session: this.session, rater: this.rater };
        if (last && last.kind === "rate") {
            // The undone image is still loaded: back on show at once; the one on show goes back to the front.
            item.expect = last.entry.data.id;
            if (this.shown) this.ahead.unshift(this.shown);
            this.pending += 1;
            this.show(last.entry);
        }
        this.send(item);
        return true;
    };

    Fast.prototype.markRest = function () {
        const e = this.shown;
        const round = e ? e.data.round_id : this.lastRound;
        if (!this.session || !round) {
            this.status("No round on show to finish.");
            return true;
        }
        this.history.push({ kind: "mark", round: round });
        this.ahead = this.ahead.filter((x) => x.data.round_id !== round);
        if (e && e.data.round_id === round) this.show(this.ahead.shift() || null);
        this.send({ kind: "mark", session: this.session, round: round, rater: this.rater });
        return true;
    };

    // ---- the outbox: every action reaches the server once, in order ----
    // Queued at once (in memory); stored, sent and the queue refilled after the next paint, so none of it delays
    // the image the key press put on show.
    Fast.prototype.send = function (item) {
        item.client = this.client;
        this.outbox.push(item);
        const self = this;
        afterPaint(function () {
            self.save();
            self.pump();
            self.refill();
        });
    };

    Fast.prototype.save = function () {
        const s = storage();
        if (!s) return;
        try {
            if (this.outbox.length) s.setItem(OUTBOX_KEY + this.client, JSON.stringify({ at: Date.now(), items: this.outbox }));
            else s.removeItem(OUTBOX_KEY + this.client);
        } catch (error) {
            // storage full or blocked: the outbox still lives in this page
        }
    };

    // Outboxes of pages closed before they could send everything: this page sends them.
    Fast.prototype.adoptOrphans = function () {
        const s = storage();
        if (!s) return;
        for (let i = s.length - 1; i >= 0; i--) {
            const key = s.key(i);
            if (!key || key.indexOf(OUTBOX_KEY) !== 0 || key === OUTBOX_KEY + this.client) continue;
            try {
                const box = JSON.parse(s.getItem(key));
                if (Date.now() - box.at < ORPHAN_MS) continue; // that page is still open
                s.removeItem(key);
                (box.items || []).forEach((m) => m.kind !== "undo" && this.outbox.push(m)); // its undo was its own
            } catch (error) {
                s.removeItem(key);
            }
        }
        this.save();
    };

    Fast.prototype.post = function (item) {
        let path, body;
        if (item.kind === "rate") {
            path = "/images/" + item.image + "/rating";
            body = { rating: item.rating, rater: item.rater, client: item.client };
        } else if (item.kind === "undo") {
            path = "/sessions/" + item.session + "/undo";
            body = { rater: item.rater, client: item.client };
        } else {
            path = "/rounds/" + item.round + "/mark-rest";
            body = { rating: "dislike", rater: item.rater, client: item.client };
        }
        return fetch(this.url(path), {
            method: "POST",
            credentials: "same-origin",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify(body),
        });
    };

    Fast.prototype.pump = async function () {
        if (this.sending) return;
        this.sending = true;
        clearTimeout(this.syncTimer);
        while (this.outbox.length) {
            const item = this.outbox[0];
            let res = null;
            let body = null;
            try {
                res = await this.post(item);
                body = await res.json().catch(() => ({}));
            } catch (error) {
                res = null; // the server is unreachable
            }
            if (!res || res.status >= 500 || res.status === 429) {
                const why = res ? (body && body.detail) || "HTTP " + res.status : "the server does not answer";
                this.status("⚠ " + this.outbox.length + " rating(s) not saved yet: " + why + ". Retrying…", true);
                await new Promise((ok) => setTimeout(ok, this.backoff));
                this.backoff = Math.min(this.backoff * 2, 10000);
                continue;
            }
            this.backoff = 500;
            this.outbox.shift();
            this.save();
            if (!res.ok) {
                this.status("⚠ " + item.kind + " refused: " + ((body && body.detail) || "HTTP " + res.status), true);
                continue;
            }
            if (this.error) this.status(""); // the retry got through
            this.answered(item, body);
        }
        this.sending = false;
        this.save();
        const self = this;
        this.syncTimer = setTimeout(() => self.sync(), SYNC_MS);
    };

    Fast.prototype.answered = function (item, body) {
        if (item.session !== this.session) return;
        if (item.kind === "undo") {
            const undone = (body && body.undone) || [];
            const back = undone.filter((u) => u.value === "pending").map((u) => u.image_id);
            if (!undone.length) this.status("Nothing to undo.");
            else this.status("Undone: image(s) " + undone.map((u) => u.image_id).join(", ") + ".");
            // What the page put back on show is what the server undid: nothing to do. Otherwise (a mark-the-rest
            // undone, or something the page did not know of) the server's queue is read again.
            if (item.expect && back.length === 1 && back[0] === item.expect) return;
            if (undone.length) this.reset(this.session, this.rater, back.length ? Math.min.apply(null, back) : null);
        } else if (item.kind === "mark") {
            this.status("Marked " + ((body && body.image_ids) || []).length + " pending image(s) as disliked.");
            if (!this.shown) this.refill();
        }
    };

    // The ratings paused: gradio refreshes the statistics and the round's gallery (one request, not one per rating).
    Fast.prototype.sync = function () {
        if (this.sending || this.outbox.length || !this.session) return;
        window.promptscopeClick && window.promptscopeClick(PREFIX + "_fast_sync");
    };

    // The tab showed an image through gradio (its caption carries a new data-view): the view takes it over.
    Fast.prototype.follow = function () {
        const cap = root().querySelector("#" + PREFIX + "_caption .ps-caption[data-view]");
        if (!cap) return;
        const key = cap.getAttribute("data-view");
        if (key === this.viewKey) return;
        this.viewKey = key;
        const sid = parseInt(cap.getAttribute("data-session-id") || "", 10) || null;
        const image = parseInt(cap.getAttribute("data-image-id") || "", 10) || null;
        const box = root().querySelector("#" + PREFIX + "_rater input, #" + PREFIX + "_rater textarea");
        const rater = box ? box.value.trim() : cap.getAttribute("data-rater") || "";
        // already on show (the tab caught up with the view): keep the images loaded ahead
        if (sid === this.session && rater === this.rater && image && this.shown && this.shown.data.id === image) return;
        this.reset(sid, rater, image);
    };

    window.promptscopeBanditSync = function (args) {
        const res = Array.from(args);
        if (fast.on) {
            const e = fast.shown;
            const round = (e && e.data.round_id) || fast.lastRound;
            if (round) res[1] = String(round);
            res[3] = fast.rater;
        }
        return res;
    };

    function startFast() {
        const tab = root().querySelector("#" + PREFIX);
        const el = root().querySelector("#" + PREFIX + "_fast .ps-fast");
        if (!tab || !el) return;
        if (!fast.on || fast.el !== el) {
            try {
                fast = new Fast(el);
            } catch (error) {
                console.error("PromptScope: the rating view did not start; the tab's own buttons rate", error);
                fast = { on: false };
                return;
            }
        }
        tab.classList.add("ps-fast-on");
        fast.follow();
        fast.checkRater();
        if (Date.now() - (fast.savedAt || 0) > ORPHAN_MS / 3) {
            fast.savedAt = Date.now();
            if (fast.outbox.length) fast.save(); // keeps this page's unsent outbox from looking orphaned
        }
    }

    setInterval(startFast, 150);
    window.promptscopeBanditView = () => fast; // for tests and the bench

    // promptscope.js normally loads first (A1111 sorts scripts by name); wait for it otherwise.
    if (!bind()) {
        const timer = setInterval(function () {
            if (bind()) clearInterval(timer);
        }, 200);
    }
})();
