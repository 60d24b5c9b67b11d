"""The Label tab: the queue, the browser canvas (annotator/canvas.py, canvas.js), the instance list, the review
buttons, history and save. Its callbacks are thin: they call annotator.labeling, annotator.canvas and db."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
import weakref

import gradio as gr

from annotator import canvas, keymap, presence, text
from annotator.access import Roles
from annotator.background import BackgroundProposer
from annotator.labeling import LabelSession, SaveConflict
from annotator.messages import whole
from annotator.messages import whole_text as id_field
from annotator.page import RELOAD, EditRate, Page, PageLimits, Pages
from annotator.widgets import markdown
from db import annotations, claims, users
from db.errors import UserError
from db.ids import id_problem
from db.store import Store
from model import api

log = logging.getLogger(__name__)


MAX_SEQ = 2 ** 53  # a canvas message's sequence number is at most this (JSON's exact integers)
OPENS_PER_USER = 2  # opens of one login that run at once; the rest of its opens wait their turn

SHORTCUTS = keymap.help_markdown() + """
**Saving** never decides for you: a proposal nobody accepted or rejected stays a proposal and the image
stays in review until none are left (`Shift+R` rejects the rest). *Discard my edits* goes back to what was
last saved.

**Two people on one image.** A notice above the picture says when someone else (or another tab of yours)
has the same image open. If they save first, your save is refused and nothing of yours is lost: the picture
shows their labels, and *Your refused edits* in the instance list shows each of your changes (hatched on the
picture) next to theirs. *Re-apply* puts yours back over theirs (or adds it, if theirs is gone), *Drop*
keeps theirs; then save. Undo takes a re-apply or drop back.
"""


HOTKEYS_JS = keymap.page_script()  # the page's keys: the buttons they click, from the one keymap


class LabelTab:
    """The label view: queue, the browser canvas (annotator/canvas.py and canvas.js), instance list, review
    buttons, history, save. The page's state (its gr.State) is an annotator.page.Page; every label event
    returns the same outputs: the page and the canvas data."""

    def __init__(self, store: Store, proposer: BackgroundProposer, roles: Roles | None = None,
                 limits: PageLimits | None = None):
        self.store, self.proposer, self.roles = store, proposer, roles or Roles(store)
        self._pictures: dict[int, dict] = {}  # the last few pictures sent to canvases
        self.presence = presence.Presence()  # who has which image open (the canvas polls canvas_presence)
        # every open page by its secret token (the canvas's edits are direct server-function calls, which do
        # not see the page's gr.State): bounded, idle pages end (annotator.page)
        self.pages = Pages(limits or PageLimits(), on_end=self._ended)
        self.rate = EditRate()  # each login's edit messages, canvas and /label_image alike
        self._user_slots: dict[str, threading.BoundedSemaphore] = {}  # each login's opens at a time (_slots)
        self._slots_lock = threading.Lock()
        self._tabs: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # each tab's page (_page_for)
        self._active: tuple[int | None, float] = (None, -1e9)  # the active version's id, and when it was read

    def _ended(self, page: Page) -> None:
        """A page ended: it is no longer on its image, and the image it held is free for others."""
        self.presence.close(page.token)
        if page.claimed is not None:
            try:
                claims.release(self.store, page.user, [page.claimed])
            except Exception:  # noqa: BLE001 - the claim then expires by itself (claims.PAGE_SECONDS)
                log.exception("releasing the claim on image %s failed", page.claimed)
            page.claimed = None

    # --- helpers --------------------------------------------------------------------------------------
    def outputs(self, page: Page | None, message: str = "", via_event: bool = True, delta: bool = False):
        """(page, canvas data): every label event's outputs. The canvas shows the message, the image line
        and the instance list itself, so an edit's answer is one small update."""
        if self.proposer.last_error:
            message = (message + "\n" if message else "") + self.proposer.last_error
            self.proposer.last_error = ""
        ls = page.session if page is not None else None
        if ls is None:
            if page is not None and page.ended:
                return page, {"message": "\n".join([message] * bool(message) + [page.ended]), "ended": True}
            return page, {"message": message or "No images yet: import some in the Dataset tab."}
        if ls.broken:  # rows that cannot be shown are named, never hidden silently
            message = "\n".join([message] * bool(message) + ls.broken)
        if ls.edits.dropped:
            message = "\n".join([message] * bool(message) + [
                f"(the oldest {ls.edits.dropped} undo step(s) were dropped to keep this image's undo history "
                f"within {ls.edits.budget // 2 ** 20} MB)"])
            ls.edits.dropped = 0
        ls.refresh_categories()  # one added in the Dataset tab reaches the class lists
        if not ls.categories and not message:
            message = "No categories yet: add them in the Dataset tab, or import a COCO file that has them."
        data = canvas.payload(page, message, delta=delta)
        if len(data["instances"]) > canvas.MANY_INSTANCES and via_event:  # fetched by the canvas (canvas_fetch)
            page.display_cache["outbox"] = data
            return page, {"fetch": True, "token": page.token, "rev": data["rev"], "image_id": data["image_id"]}
        return page, data

    def _page_of(self, message, request=None, use: bool = True) -> Page | None:
        """The open page a canvas call's ``token`` names, when the call comes from that page's login (a token
        alone opens nobody else's page); None otherwise."""
        token = message.get("token") if isinstance(message, dict) else None
        page = self.pages.get(token, use=use)
        if page is not None and self.roles.login and self.roles.login_of(request) != page.user:
            return None
        return page

    def _may_not_label(self, page: Page) -> str:
        """"" while the page's login may label (its role read again: a changed role or a removed account counts
        at once), else why not."""
        page.role = self.roles.role_of(page.user)
        try:
            users.require(page.role, "label", page.user if self.roles.login else "")
        except UserError as e:
            return str(e)
        return ""

    def canvas_fetch(self, message, request=None) -> dict:
        """The canvas's server function for the data of an image with very many instances, which a label
        event announced instead of sending (``fetch``)."""
        page = self._page_of(message, request)
        if page is None:
            return {"message": "this page's labeling session is gone: reload the page", "ended": True}
        no = self._may_not_label(page)
        if no:
            return {"message": no}
        with page.lock:
            data = page.display_cache.pop("outbox", None)
            if data is not None and data["rev"] == message.get("rev"):
                return data
            wait = self.rate.take(page.who, 1.0)  # the whole of an image's labels, asked for again
            if wait:
                return {"message": f"too many requests too fast: try again in {max(wait, 0.1):.1f} s"}
            return self.outputs(page, via_event=False)[1]

    def open(self, image_id, page: Page | None, request=None, note: str = "", back: bool = False,
             walk: list[int] | None = None, which: str = ""):
        """Open an image (saving unsaved edits of the current one first), or with ``walk`` (the images of the
        queue ``which`` in the order to try) the first of them nobody else holds and still in it (db.claims). The page holds the image it shows
        while it is on it. The page remembers the images it came through, so Previous (``back``) returns to
        the one before, whatever the queue's order now."""
        role = self.roles.role(request)  # read once: checked here, kept on the page for its review actions
        user = self.roles.name(request)
        try:
            users.require(role, "label", user if self.roles.login else "")
        except UserError as e:
            return self.outputs(page, str(e))
        if page is None:
            page = self._page_for(getattr(request, "session_hash", None), user, role, self.roles.session_key(request))
        with page.lock:
            page.opens += 1
            mine = page.opens
        with self._slots(page.who), page.lock:  # one open at a time per page, two per login; of a burst (Next held
            if page.opens != mine:          # down) only the last one runs; the others leave the canvas be
                return page, gr.skip()
            out = self._open(image_id, page, role, user, note, back, walk, which)
        if page.session is not None:
            # registered outside the page's lock: making room ends other pages, taking their locks in turn
            self.pages.add(page)
        return out

    def _page_for(self, browser: str | None, user: str, role, login: str = "") -> Page:
        """The page of this browser tab: a new one, or the one an event of the same tab made a moment ago
        (the page's first events, the page load and the tab's select, run at once and both start without it).
        ``login``: the login session it is opened in (its pages end with it)."""
        with self._slots_lock:
            page = self._tabs.get(browser) if browser else None
            if page is None or page.user != user or page.login != login:
                token = secrets.token_urlsafe(24)
                # without logins every browser is "local": each tab then has budgets of its own
                page = Page(token, user=user, role=role, browser=browser, login=login,
                            owner=user if self.roles.login else f"tab {browser or token}")
                if browser:
                    self._tabs[browser] = page
            return page

    def _slots(self, user: str) -> threading.BoundedSemaphore:
        """The login's share of the server for opening images: OPENS_PER_USER at a time, so one user's pile of
        opens (many tabs, a script) waits for its own turns while other users' opens run beside it."""
        with self._slots_lock:
            slot = self._user_slots.get(user)
            if slot is None:
                if len(self._user_slots) > 10_000:
                    self._user_slots.clear()
                slot = self._user_slots[user] = threading.BoundedSemaphore(OPENS_PER_USER)
            return slot

    def _open(self, image_id, page: Page, role, user, note: str, back: bool, walk: list[int] | None = None,
              which: str = ""):
        msg = note
        ls = page.session
        holder = None
        if walk is not None:  # handed out: the first one nobody else holds, claimed for this person
            got = claims.take(self.store, user, walk, claims.PAGE_SECONDS, where=claims.still_in(which))
            image_id = got[0] if got else None
            mine = image_id is not None
        elif image_id is not None and not id_problem(image_id):  # picked by id: held if nobody else holds it
            mine = bool(claims.take(self.store, user, [image_id], claims.PAGE_SECONDS))
            holder = None if mine else claims.holder(self.store, image_id, other_than=user)
        else:
            mine = False
        if ls is not None and ls.dirty and image_id != ls.image_id:
            try:
                with ls.lock:
                    left = ls.save(page.user)
                msg = f"saved image {ls.image_id}" + (f" ({left} proposal(s) left unreviewed)" if left else "") \
                    + ". " + msg
            except SaveConflict:  # stay on this image: its edits must not be left behind unsaved
                self._let_go(page, image_id if mine else None)
                return self.outputs(page, ls.conflicts.review() + " (You stayed on this image.)")
            except UserError as e:  # refused edits still wait to be re-applied or dropped
                self._let_go(page, image_id if mine else None)
                return self.outputs(page, f"{e} (You stayed on this image.)")
        if image_id is None:
            if not annotations.queue(self.store, "all"):
                return self.outputs(page, msg or "No images yet: import some in the Dataset tab (or run "
                                                 "app.py demo for synthetic ones).")
            held = len(claims.held_by_others(self.store, user)) if walk is not None else 0
            return self.outputs(page, msg or "Nothing more in this queue" + (
                f" for you: the other {held} image(s) not done are held by others (open one by id to look)."
                if held else "."))
        problem = id_problem(image_id)
        if problem:
            return self.outputs(page, f"no image with id {image_id}: {problem}")
        try:
            new = LabelSession(self.store, image_id, min_score=page.min_score,
                               history_bytes=self.pages.limits.history_bytes)
        except UserError as e:
            self._let_go(page, image_id if mine else None)
            return self.outputs(page, str(e))
        if holder is not None:
            msg = "\n".join([msg] * bool(msg) + [held_note(image_id, holder)])
        if page.claimed is not None and page.claimed != new.image_id:
            claims.release(self.store, user, [page.claimed])  # moved on: free for the next person
        page.claimed = new.image_id if mine else None
        page.claim_renewed = time.monotonic()
        if back and page.trail:
            page.trail.pop()
        elif ls is not None and ls.image_id != new.image_id:
            page.trail = (page.trail + [ls.image_id])[-100:]
        page.user, page.role = user, role  # who saves, and what they may do (read again on each canvas edit)
        page.session = new
        page.display_cache.clear()
        self.presence.open(page.token, new.image_id, page.user)
        order = walk if walk is not None else claims.queue_for(self.store, user)
        following = []
        if new.image_id in order:
            k = order.index(new.image_id)
            following = order[k + 1:k + 4]
            self.proposer.want(following)
        page.next = following[:1]
        self.proposer.warm([new.image_id] + following)  # assist's features, before anyone asks
        return self.outputs(page, msg)

    def _let_go(self, page: Page, image_id: int | None) -> None:
        """An image claimed for this page that it did not open after all is free again."""
        if image_id is not None and image_id != page.claimed:
            claims.release(self.store, page.user, [image_id])

    def walk(self, which, page, request=None, review: annotations.ReviewFilter | None = None, step: int = +1,
             from_start: bool = False):
        """Open the next image of the queue ``which`` for this person (after the page's image, or with
        ``from_start`` from the queue's first): the first one nobody else holds, or with ``step`` < 0 the one
        before."""
        ls = page.session if page is not None else None
        ids = claims.queue_for(self.store, self.roles.name(request), which, review)
        here = ls.image_id if ls is not None and not from_start else None
        if here in ids:
            k = ids.index(here)
            walk = ids[k + 1:] if step > 0 else ids[:k][::-1]
        else:
            walk = ids if step > 0 else ids[::-1]
        if not walk and step < 0 and here is not None:  # before the queue's first: the image saved last
            target = annotations.last_reviewed_image(self.store, ls.image_id)
            if target is None:
                return self.outputs(page, "This is the first image in this queue.")
            return self.open(target, page, request, "This was the first image in this queue; here is the image "
                                                    "saved last.")
        return self.open(None, page, request, walk=walk, which=which)

    def step(self, which, page, step, request=None, review: annotations.ReviewFilter | None = None):
        ls = page.session if page is not None else None
        if step < 0 and ls is not None and page.trail:  # back to the image this page came from
            return self.open(page.trail[-1], page, request, back=True)
        return self.walk(which, page, request, review, step)

    def act(self, fn, page: Page | None, via_event: bool = True, delta: bool = False):
        if page is None:
            return self.outputs(page, "Open an image first.")
        with page.lock:
            ls = page.session
            if ls is None:
                return self.outputs(page, "" if page.ended else "Open an image first.")
            with ls.lock:
                try:
                    msg = fn(page) or ""
                except UserError as e:
                    msg = str(e)
                return self.outputs(page, msg, via_event=via_event, delta=delta)

    def edit(self, page, data):
        """One message from the canvas (annotator.canvas.apply); returns the outputs (answered directly to
        the canvas's call, never through a label event)."""
        def apply(p):
            if isinstance(data, dict) and isinstance(data.get("seq"), int):
                p.seq = max(p.seq, min(data["seq"], MAX_SEQ))  # answered, whatever the outcome
            return canvas.apply(p, data, self.proposer)

        return self.act(apply, page, via_event=False, delta=True)

    def canvas_edit(self, message, request=None) -> dict:
        """The canvas's server function for an edit: the message applied to the open page holding the
        message's ``token``, and the canvas data it answers with."""
        page = self._page_of(message, request)
        if page is None:
            token = message.get("token") if isinstance(message, dict) else None
            return {"message": self.pages.why_ended(token) or "this page's labeling session is gone (the server "
                    "restarted?): reload the page", "ended": True}
        no = self._may_not_label(page)
        if no:
            return self._answer(page, no)
        wait = self.rate.take(page.who, canvas.cost(message))
        if wait:
            with page.lock:
                if isinstance(message.get("seq"), int):
                    page.seq = max(page.seq, min(message["seq"], MAX_SEQ))  # answered: refused, nothing changed
                return self._answer(page, f"too many edits too fast: that one was not applied; try again in "
                                          f"{max(wait, 0.1):.1f} s")
        try:
            return self.edit(page, message)[1]
        except Exception as e:  # noqa: BLE001 - the canvas must get an answer, never wait for one
            log.exception("canvas edit %r failed", message)
            return self._answer(page, f"that edit failed on the server and changed nothing: {e}")

    def _answer(self, page: Page, message: str) -> dict:
        """The canvas data answering one of its own calls with ``message`` (only what changed, for an image
        of very many instances: a refusal never costs the whole of its labels)."""
        with page.lock:
            return self.outputs(page, message, via_event=False, delta=True)[1]

    def canvas_presence(self, message, request=None) -> dict:
        """The canvas's server function, every few seconds: this page is still on its image, and who else is
        (annotator.presence). A page that goes away (``leaving``), or whose login may no longer label, ends:
        what it held is freed, and nobody is told it is still there."""
        page = self._page_of(message, request, use=False)
        no = self._may_not_label(page) if page is not None else ""
        if no:
            self.pages.end(page.token, f"{no}: {RELOAD}")
            page = None
        out = self.presence.poll(message, page)
        if page is not None and isinstance(message, dict) and message.get("leaving") is True:
            self.pages.end(page.token, f"this page was closed: {RELOAD}")
        elif page is not None:
            self._keep_claim(page)
            out["news"] = self._news(page)
        return out

    def _news(self, page: Page) -> str:
        """What changed in the store about the page's image since it read it: its labels (another person's
        save, new proposals), or a newer model whose proposals it does not have yet; "" when nothing did."""
        ls = page.session
        if ls is None:
            return ""
        im = annotations.images(self.store, [ls.image_id]).get(ls.image_id)
        if im is None:
            return ""
        if im.row_version != ls.row_version:
            return "This image's labels changed in the store since you opened it (new proposals, or someone saved it)."
        active = self._active_version()
        if active is not None and im.status != "done" and im.proposed_version_id != active:
            return f"Model version {active} is active; this image has no proposals from it yet."
        return ""

    def _active_version(self) -> int | None:
        """The active model version's id, read at most every few seconds (every open page asks, every poll)."""
        now = time.monotonic()
        if now - self._active[1] > 5.0:
            v = api.active_version(self.store)
            self._active = (v.id if v is not None else None, now)
        return self._active[0]

    def _keep_claim(self, page: Page) -> None:
        """While a page is open on an image it holds, its claim is renewed (every claims.RENEW_EVERY s)."""
        now = time.monotonic()
        image_id = page.claimed
        if image_id is None or now - page.claim_renewed < claims.RENEW_EVERY:
            return
        page.claim_renewed = now
        if not claims.renew(self.store, page.user, [image_id], claims.PAGE_SECONDS):
            # lapsed (the machine slept?): held again if nobody else took it meanwhile
            if not claims.take(self.store, page.user, [image_id], claims.PAGE_SECONDS):
                page.claimed = None

    def end_browser(self, session_hash: str | None) -> int:
        """A browser tab closed (Gradio's unload): its pages end."""
        if not session_hash:
            return 0
        return self.pages.end_where(lambda p: p.browser == session_hash, "this page was closed: reload it")

    def end_login(self, user: str, why: str) -> int:
        """A login logged out: its pages end."""
        return self.pages.end_where(lambda p: p.user == user, why)

    def end_session(self, key: str, why: str) -> int:
        """A login session ended (its account removed, its password changed: annotator.access.Sessions): the
        pages opened in it end."""
        return self.pages.end_where(lambda p: p.login == key, why) if key else 0

    def picture(self, image_id, request=None) -> dict:
        """The canvas's server function: the image's pixels, once per opened image, for a login that may label;
        {"image_id", "error"} naming why when it cannot be sent (a raised error reaches the page as a bare
        HTTP 500, without its message)."""
        try:
            self.roles.require(request, "label")
            image_id = whole(image_id, "image id")
            problem = id_problem(image_id)
            if problem:
                raise UserError(f"no image with id {image_id}: {problem}")
        except UserError as e:
            return {"image_id": None, "error": str(e)}
        if image_id not in self._pictures:
            try:
                pic = canvas.picture(self.store, image_id)
            except UserError as e:
                return {"image_id": image_id, "error": str(e)}
            while len(self._pictures) >= 3:
                self._pictures.pop(next(iter(self._pictures)))
            self._pictures[image_id] = pic
        return self._pictures[image_id]

    def save(self, page):
        """Save the open image (annotator.canvas's "save": nothing unseen is decided, conflicts kept to review)."""
        return self.act(lambda p: canvas.apply(p, {"op": "save"}), page)

    # --- layout ---------------------------------------------------------------------------------------
    def build(self, demo: gr.Blocks):
        store = self.store
        sess = gr.State(None)

        # Gradio hands a server function the HTTP request (its login's session cookie) only when annotated so
        def canvas_image(image_id, request: gr.Request):  # canvas.js: server.canvas_image(id), once per opened image
            return self.picture(image_id, request)

        def canvas_edit(message, request: gr.Request):  # canvas.js: server.canvas_edit(message), per edit
            return self.canvas_edit(message, request)

        def canvas_presence(message, request: gr.Request):  # canvas.js: server.canvas_presence({token, browser}), every 3 s
            return self.canvas_presence(message, request)

        def canvas_fetch(message, request: gr.Request):  # canvas.js: server.canvas_fetch({token, rev}), many instances
            return self.canvas_fetch(message, request)

        with gr.Row(equal_height=True):
            which = gr.Dropdown(annotations.QUEUE_FILTERS, value=annotations.QUEUE_FILTERS[0], label="Queue", scale=2,
                                elem_id="queue-filter")
            prev_b = gr.Button("◀ Previous (p)", elem_id="btn-prev", size="sm", scale=1)
            next_b = gr.Button("Next (n) ▶", elem_id="btn-next", size="sm", scale=1)
            review_by = gr.Dropdown([ANYONE], value=ANYONE, label="Saved by", scale=1, visible=False,
                                    elem_id="review-by", allow_custom_value=False)
            review_days = gr.Textbox(label="Saved on (UTC)", scale=1, visible=False, elem_id="review-days",
                                     max_lines=1, placeholder="2026-12-01, or 2026-12-01..2026-12-05, then Enter")
            jump = gr.Textbox(label="Image id", scale=1, elem_id="jump-id", max_lines=1,
                              placeholder="an image id, then Enter")
            go = gr.Button("Open", elem_id="btn-open", size="sm", scale=1)
        with gr.Row():
            with gr.Column(scale=5):
                board = gr.HTML(None, html_template=canvas.TEMPLATE, css_template=canvas.CSS, js_on_load=canvas.JS,
                                elem_id="label-canvas", server_functions=[canvas_image, canvas_edit, canvas_presence, canvas_fetch],
                                padding=False)
            with gr.Column(scale=1, min_width=200, elem_id="label-actions"):
                save_b = gr.Button("Save (s)", elem_id="btn-save", variant="primary", size="sm")
                discard_b = gr.Button("Discard my edits", elem_id="btn-discard", size="sm")
                rest_b = gr.Button("Reject the rest (R)", elem_id="btn-reject-rest", size="sm")
                accept_b = gr.Button("Accept (a)", elem_id="btn-accept", variant="primary", size="sm")
                reject_b = gr.Button("Reject (r)", elem_id="btn-reject", size="sm")
                accept_all_b = gr.Button("Accept all shown (A)", elem_id="btn-accept-all", size="sm")
                delete_b = gr.Button("Delete (Del)", elem_id="btn-delete", variant="stop", size="sm")
                undo_b = gr.Button("Undo (z)", elem_id="btn-undo", size="sm")
                redo_b = gr.Button("Redo (y)", elem_id="btn-redo", size="sm")
                box_mask_b = gr.Button("Box from mask", elem_id="btn-box-from-mask", size="sm")
                again_b = gr.Button("Propose again", elem_id="btn-propose-again", size="sm")
                with gr.Column(visible=False, elem_id="review-panel", min_width=160) as review_panel:  # for reviewers
                    verdict_note = gr.Textbox(label="Note for the labeler", lines=2, max_lines=6,
                                              elem_id="verdict-note", placeholder="what to fix (to send back)")
                    approve_b = gr.Button("Approve labels", elem_id="btn-approve", variant="primary", size="sm")
                    send_back_b = gr.Button("Send back", elem_id="btn-send-back", variant="stop", size="sm")
        with gr.Accordion("Keyboard shortcuts and help", open=False, elem_id="help-panel"):
            markdown(SHORTCUTS)

        outs = [sess, board]

        def first(ls, request: gr.Request):
            return self.walk(annotations.QUEUE_FILTERS[0], ls, request)

        def filtered(w, by, days, ls, request, step: int | None):
            try:
                review = review_filter(by, days) if w == annotations.TO_REVIEW else None
            except UserError as e:
                return self.outputs(ls, str(e))
            if step is None:  # the queue or its filter changed: its first image
                return self.walk(w, ls, request, review, from_start=True)
            return self.step(w, ls, step, request, review)

        def prev_image(w, by, days, ls, request: gr.Request):
            return filtered(w, by, days, ls, request, -1)

        def next_image(w, by, days, ls, request: gr.Request):
            return filtered(w, by, days, ls, request, +1)

        def first_in(w, by, days, ls, request: gr.Request):
            return filtered(w, by, days, ls, request, None)

        def open_id(typed, ls, request: gr.Request):
            try:
                image_id = id_field(typed, "image id")
            except UserError as e:
                return self.outputs(ls, str(e))
            if image_id is None:
                return self.outputs(ls, "enter the id of the image to open")
            return self.open(image_id, ls, request)

        # every user's label events at once (one user's slow opens never hold another's); one page's events one
        # at a time (its Page's lock), and of a burst of opens from one page only the last one does the work
        label = dict(concurrency_limit=None)
        demo.load(first, [sess], outs, **label)
        walk_in = [which, review_by, review_days, sess]
        prev_b.click(prev_image, walk_in, outs, **label)
        next_b.click(next_image, walk_in, outs, **label)
        go.click(open_id, [jump, sess], outs, **label)
        jump.submit(open_id, [jump, sess], outs, **label)
        which.input(first_in, walk_in, outs, **label)
        which.input(lambda w: [gr.update(visible=w == annotations.TO_REVIEW, choices=[ANYONE] + annotations.savers(
            store))] + [gr.update(visible=w == annotations.TO_REVIEW)], which, [review_by, review_days],
            queue=False)
        review_by.input(first_in, walk_in, outs, **label)
        review_days.submit(first_in, walk_in, outs, **label)

        # the review and edit buttons act through the canvas, like its keys: queued behind the edits still on
        # their way, and answered by the same direct call (annotator/canvas.js act())
        for button, op in ((accept_b, "accept"), (reject_b, "reject"), (delete_b, "delete"),
                           (accept_all_b, "accept_all"), (rest_b, "reject_rest"), (discard_b, "discard"),
                           (undo_b, "undo"), (redo_b, "redo"), (box_mask_b, "box_from_mask"), (save_b, "save")):
            button.click(None, js=f"() => {{ {canvas.JS_STATE}.act('{op}'); }}")
        approve_b.click(None, js=f"() => {{ {canvas.JS_STATE}.act('approve'); }}")
        send_back_b.click(None, verdict_note, js=f"(note) => {{ {canvas.JS_STATE}.act('send_back', {{note}}); }}")
        self.review_panel = review_panel
        again_b.click(None, js=f"() => {{ {canvas.JS_STATE}.act('propose_again'); }}")  # (edits kept on top)
        self.sess, self.board, self.label_events = sess, board, label

    def on_show(self, page, request: gr.Request = None):  # annotated: Gradio passes the login only then
        """The Label tab shown again: class lists follow categories changed in the Dataset tab, and a page
        that had nothing to open (an empty store) opens the first image imported since."""
        if page is None or page.session is None:
            return self.walk(annotations.QUEUE_FILTERS[0], page, request)
        with page.lock:
            return self.outputs(page)

    def open_from(self, image_id, ls, request=None):
        """Open an image picked elsewhere (a gallery thumbnail)."""
        return self.open(image_id, ls, request)


ANYONE = "anyone"  # the review queue's "saved by" choice for every labeler


def review_filter(by, days) -> annotations.ReviewFilter:
    """The review queue's filter from its two fields: "saved by" (a name, or ANYONE) and the days saved (a UTC
    date ``2026-12-01``, a range ``2026-12-01..2026-12-05``, or an open range ``..2026-12-05``; blank: any
    day). UserError naming what is wrong."""
    by = None if by in (None, "", ANYONE) else str(by)
    days = (days or "").strip()
    if not days:
        return annotations.ReviewFilter(by)
    first, sep, last = days.partition("..")
    try:
        since = dt.date.fromisoformat(first.strip()) if first.strip() else None
        until = dt.date.fromisoformat(last.strip()) if last.strip() else None if sep else since
    except ValueError:
        raise UserError(f"saved on {days!r}: a date like 2026-12-01, or a range like 2026-12-01..2026-12-05") from None
    if since and until and until < since:
        raise UserError(f"saved on {days!r}: the range ends before it starts")
    return annotations.ReviewFilter(by, since, until)


def held_note(image_id: int, h: claims.Holder) -> str:
    """What a person opening an image someone else holds is told (Markdown)."""
    return (f"image {image_id} is {h.how} {text.escape(h.user)}{h.until_text}: you can look, but if you both save, the "
            "second save is refused (and kept for review)")
