"""The Gradio application. Callbacks are thin: they call plain functions in annotator/ (labeling, view,
store_view), db/ and model.api, which the tests call too."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets
import threading
import time
import weakref

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from annotator import access, canvas, model_view, presence, store_view, text, view
from annotator.access import LoginGuard, LoginRequired, Roles, Sessions
from annotator.limits import CACHE_CLEANUP, BodyLimits, UploadLedger, UploadLimits
from annotator.background import BackgroundProposer
from annotator.follow import Follower
from annotator.labeling import LabelSession, SaveConflict
from annotator.page import RELOAD, EditRate, Page, PageLimits, Pages
from db import annotations, claims, settings, users
from db import categories as cat_db
from db.ids import id_problem
from db.errors import UserError
from db.stats import review_stats
from db.store import Store
from model import api
from model.api import ModelOptions

log = logging.getLogger(__name__)

MAX_SEQ = 2 ** 53  # a canvas message's sequence number is at most this (JSON's exact integers)
OPENS_PER_USER = 2  # opens of one login that run at once; the rest of its opens wait their turn

SHORTCUTS = """
| key | action |
|---|---|
| `Tab` / `Shift+Tab` | select the next / previous instance |
| `a` | accept the selected instance and go to the next unreviewed one |
| `r` | reject the selected instance and go to the next unreviewed one |
| `Shift+A` | accept every unreviewed proposal shown (at or above the min score) |
| `Shift+R` | reject the rest: every proposal still unreviewed |
| `Delete` | delete the selected instance |
| `s` or `Ctrl+S` | save |
| `n` or `→` / `p` or `←` | next / previous image (moving on saves) |
| `z` or `Ctrl+Z` / `y` or `Ctrl+Shift+Z` | undo / redo |
| `v` `b` `e` `g` `m` `k` `x` | tools: select, brush, eraser, polygon, box, keypoint, assist |
| `[` / `]` | brush and eraser smaller / larger |
| `Enter` / `Escape` | close the polygon / cancel it (or deselect) |
| `o` or right click | keypoint under the pointer: visible ⇄ occluded |
| wheel | zoom around the pointer |
| `Space`+drag, middle drag, or drag empty space with *select* | pan |
| `f` / `1` | fit the image / one image pixel per screen pixel |

The canvas keys work while the pointer is over the picture (or after clicking it).

**Tools.** *select*: click an instance; drag a handle of the selected one: its box corners and edges, its
polygon's vertices, its keypoints. *brush* / *eraser*: drag over the selected mask (with nothing selected the
brush draws a new instance of the chosen class). *polygon*: click vertices, click the first one or press
Enter to close; it adds to the selected mask, subtracts, or becomes a new instance (the toolbar's choice).
*box*: drag a new box for the selected instance. *keypoint*: choose the keypoint in the toolbar, click where
it is. *assist*: drag a rough box around an object the proposals missed (or just click it): the active
model's heads find its mask (and keypoints) in exactly that box; it arrives selected, to accept (`a`) or
edit; dragging its box handles asks the model again.

**Saving** never decides for you: a proposal nobody accepted or rejected stays a proposal and the image
stays in review until none are left (`Shift+R` rejects the rest). *Discard my edits* goes back to what was
last saved.

**Two people on one image.** A notice above the picture says when someone else (or another tab of yours)
has the same image open. If they save first, your save is refused and nothing of yours is lost: the picture
shows their labels, and *Your refused edits* in the instance list shows each of your changes (hatched on the
picture) next to theirs. *Re-apply* puts yours back over theirs (or adds it, if theirs is gone), *Drop*
keeps theirs; then save. Undo takes a re-apply or drop back.
"""

HOTKEYS_JS = """
<script>
document.addEventListener('keydown', (e) => {
  const t = e.target;
  if (e.key === 'Enter' && t && t.closest && t.closest('#jump-id')) {  // an id typed and opened: the keys go back
    setTimeout(() => t.blur(), 0);                                      // to labeling (a, r, ...), not the box
    return;
  }
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return;
  const k = e.key;
  const ctrl = e.ctrlKey || e.metaKey;
  let id = null;
  if (ctrl && (k === 's' || k === 'S')) id = 'btn-save';
  else if (ctrl && e.shiftKey && (k === 'z' || k === 'Z')) id = 'btn-redo';
  else if (ctrl && (k === 'z' || k === 'Z')) id = 'btn-undo';
  else if (ctrl) return;
  else id = {a: 'btn-accept', r: 'btn-reject', A: 'btn-accept-all', R: 'btn-reject-rest', Delete: 'btn-delete',
             n: 'btn-next', ArrowRight: 'btn-next', p: 'btn-prev', ArrowLeft: 'btn-prev', s: 'btn-save',
             z: 'btn-undo', y: 'btn-redo'}[k] || null;
  if (!id) return;
  const root = document.getElementById(id);
  const el = root && (root.tagName === 'BUTTON' ? root : root.querySelector('button'));
  if (el) { e.preventDefault(); el.click(); }
});
</script>
"""


def markdown(*args, **kwargs) -> gr.Markdown:
    """A Markdown component with LaTeX off: a file name like ``$$\\Huge{x}$$`` is text to show, not a formula
    (annotator.text.escape handles HTML and Markdown; KaTeX would still render text between dollars)."""
    return gr.Markdown(*args, latex_delimiters=[], **kwargs)


def refused(roles: Roles, request, action: str) -> str:
    """"" when this login may do ``action``, else the message naming the role it needs (the server's own
    check: the page only hides what a role cannot do)."""
    try:
        roles.require(request, action)
    except UserError as e:
        return str(e)
    return ""


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
            if not view.queue(self.store, "all"):
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
        wait = self.rate.take(page.who, EditRate.cost(message))
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
            image_id = _whole(image_id, "image id")
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
            which = gr.Dropdown(view.QUEUE_FILTERS, value=view.QUEUE_FILTERS[0], label="Queue", scale=2,
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
            return self.walk(view.QUEUE_FILTERS[0], ls, request)

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
            return self.walk(view.QUEUE_FILTERS[0], page, request)
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


def held_note(image_id: int, h: claims.Holder, writing: bool = False) -> str:
    """What a person opening (or, through /label_image, ``writing``) an image someone else holds is told."""
    how = "assigned to" if h.assigned else "handed to"
    until = "" if h.until is None else f" until {h.until:%H:%M} UTC unless they keep working on it"
    if writing:
        return f"image {image_id} is {how} {h.user}{until}: nothing was applied (/next_images hands you images)"
    return (f"image {image_id} is {how} {text.escape(h.user)}{until}: you can look, but if you both save, the "
            "second save is refused (and kept for review)")


def id_field(text, what: str) -> int | None:
    """An id typed into a text field (Gradio 6.31's Number shows 0 when empty, so id fields are text):
    None when blank, else a whole number, or UserError naming the field."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = float(text)
        if value.is_integer() and abs(value) < 2 ** 63:
            return int(value)
    except (TypeError, ValueError):
        pass
    raise UserError(f"{what} {text!r} is not a whole number")


def dataset_tab(store: Store, roles: Roles):
    with gr.Row():
        by_status = gr.Dataframe(headers=["status", "images"], label="Images by status", interactive=False,
                                 elem_id="counts-status")
        by_cat = gr.Dataframe(headers=["category", "accepted", "proposed", "rejected"],
                              label="Annotations by category", interactive=False, elem_id="counts-category")
    with gr.Row():
        status_plot = gr.BarPlot(x="status", y="images", label="Images by status", elem_id="plot-status")
        cat_plot = gr.BarPlot(x="category", y="count", color="state", label="Annotations by category",
                              elem_id="plot-category")
    with gr.Accordion("Images the model could not use", open=False, elem_id="problems-panel"):
        problems_line = markdown(elem_id="problems-count")
        problems = gr.Dataframe(headers=store_view.PROBLEM_HEADERS, interactive=False, elem_id="problems-table")
    with gr.Accordion("Who holds what", open=False, elem_id="holds-panel"):
        holds = gr.Dataframe(headers=store_view.HOLDS_HEADERS, interactive=False, elem_id="holds-table")
        with gr.Group() as assign_edit:
            with gr.Row():
                a_user = gr.Textbox(label="Assign to (user name)", max_lines=1, elem_id="assign-user")
                a_folder = gr.Textbox(label="Folder", placeholder="e.g. site-a/2026-11", max_lines=1)
                a_cat = gr.Textbox(label="Category (name or id)", max_lines=1)
                a_status = gr.Dropdown(["", "new", "proposed", "in_review", "done"], value="", label="Status")
                a_ids = gr.Textbox(label="Image ids", placeholder="3, 5, 9-12", max_lines=1, elem_id="assign-ids")
            with gr.Row():
                a_go = gr.Button("Assign the images picked", elem_id="btn-assign")
                a_back = gr.Button("Take back (the images picked, or all of the user's)", elem_id="btn-unassign")
        a_msg = markdown(elem_id="assign-message")
    gallery = gr.Gallery(label="Images (masks drawn)", columns=6, height=420, elem_id="store-gallery")
    with gr.Row():
        g_prev = gr.Button("◀ Previous page", elem_id="gallery-prev", scale=1)
        g_label = markdown(elem_id="gallery-page")
        g_next = gr.Button("Next page ▶", elem_id="gallery-next", scale=1)
        refresh = gr.Button("Refresh", elem_id="refresh-store", scale=1)
    g_page, g_ids = gr.State(1), gr.State([])
    with gr.Row() as import_row:
        with gr.Column():
            files = gr.File(label="Images or zip archives", file_count="multiple", type="filepath",
                            elem_id="upload-images")
            upload = gr.Button("Import images", elem_id="import-images")
        with gr.Column():
            coco_json = gr.File(label="COCO JSON", file_types=[".json"], type="filepath", elem_id="upload-coco")
            coco_images = gr.File(label="Its images (files or zip)", file_count="multiple", type="filepath")
            as_props = gr.Checkbox(label="Import as proposals to review")
            needs_review = gr.Checkbox(label="Labels wait for a reviewer (else taken as reviewed)",
                                       elem_id="import-needs-review")
            import_coco = gr.Button("Import COCO", elem_id="import-coco")
    report = gr.Textbox(label="Import report", lines=6, elem_id="import-report")
    with gr.Accordion("Categories", open=False, elem_id="categories-panel"):
        cats_table = gr.Dataframe(headers=["id", "name", "supercategory", "keypoints", "skeleton", "annotations"],
                                  interactive=False, elem_id="categories-table")
        with gr.Group() as cat_edit:
            with gr.Row():
                c_id = gr.Textbox(label="Category id (blank: new)", placeholder="blank: a new category", max_lines=1,
                                  elem_id="category-id")
                c_name = gr.Textbox(label="Name")
                c_super = gr.Textbox(label="Supercategory")
            with gr.Row():
                c_kps = gr.Textbox(label="Keypoint names (comma separated, in order)")
                c_skel = gr.Textbox(label="Skeleton (1-based pairs: 1-2, 2-3)")
            with gr.Row():
                c_save = gr.Button("Add / update category", elem_id="btn-category-save")
                c_move = gr.Textbox(label="Move its annotations to category id", placeholder="blank: none", max_lines=1,
                                    elem_id="category-move")
                c_del_anns = gr.Checkbox(label="or delete its annotations")
                c_delete = gr.Button("Delete category", variant="stop", elem_id="btn-category-delete")
        c_msg = markdown(elem_id="category-message")

    def refresh_counts():
        s, c = store_view.counts_tables(store)
        sdf = pd.DataFrame(s, columns=["status", "images"])
        cdf = pd.DataFrame([(r[0], st, r[k]) for r in c for k, st in ((1, "accepted"), (2, "proposed"), (3, "rejected"))],
                           columns=["category", "state", "count"])
        return ((s, c, sdf, cdf, store_view.categories_rows(store)) + store_view.problem_table(store)
                + (store_view.holds_rows(store),))

    def show_page(page):
        """The gallery is drawn only here: when the tab is opened, on Refresh, paging and imports."""
        gp = store_view.gallery(store, page)
        return gp.items, gp.page, gp.label, gp.ids

    def refresh_all(page):
        return refresh_counts() + show_page(page)

    counts = [by_status, by_cat, status_plot, cat_plot, cats_table, problems_line, problems, holds]
    page_outs = [gallery, g_page, g_label, g_ids]
    outputs = counts + page_outs
    refresh.click(refresh_all, g_page, outputs, api_name="refresh_store")
    g_prev.click(lambda p: show_page(p - 1), g_page, page_outs)
    g_next.click(lambda p: show_page(p + 1), g_page, page_outs)
    def import_images(paths, request: gr.Request):
        return refused(roles, request, "import") or store_view.upload_images(store, paths or [])

    def import_labels(j, im, a, review, request: gr.Request):
        return refused(roles, request, "import") or store_view.upload_coco(store, j, im or [], a, review,
                                                                           roles.name(request))

    upload.click(import_images, inputs=files, outputs=report, api_name="import_images").then(
        refresh_all, g_page, outputs)
    import_coco.click(import_labels, inputs=[coco_json, coco_images, as_props, needs_review], outputs=report,
                      api_name="import_coco").then(refresh_all, g_page, outputs)

    def save_cat(cid, name, sup, kps, skel):
        try:
            cid = id_field(cid, "category id")
            names = cat_db.parse_keypoints(kps)
            pairs = cat_db.parse_skeleton(skel, len(names))
            if cid is None:
                new = cat_db.add(store, name, sup, names, pairs)
                trained = model_view.api.active_version(store)
                return f"added category {new} '{name}'" + (
                    f". The active model (version {trained.id}) was trained without it: it goes on proposing the "
                    f"other categories; fine-tune (Model tab) to have it propose '{text.escape(name)}' too"
                    if trained is not None else "")
            cat_db.update_category(store, cid, name=name, supercategory=sup, keypoints=names, skeleton=pairs)
            return f"updated category {cid}"
        except UserError as e:
            return str(e)

    def delete_cat(cid, move, del_anns):
        try:
            cid, move = id_field(cid, "category id"), id_field(move, "category id to move to")
            if cid is None:
                return "enter the id of the category to delete"
            n = cat_db.delete(store, cid, move_to=move, delete_annotations=del_anns)
            return f"deleted category {cid}" + (f" ({n} annotation(s) moved or deleted)" if n else "")
        except UserError as e:
            return str(e)

    # the messages quote category names: plain text, escaped for the Markdown component
    def save_cat_checked(cid, name, sup, kps, skel, request: gr.Request):
        return text.escape(refused(roles, request, "categories") or save_cat(cid, name, sup, kps, skel))

    def delete_cat_checked(cid, move, del_anns, request: gr.Request):
        return text.escape(refused(roles, request, "categories") or delete_cat(cid, move, del_anns))

    def assign(user, folder, cat, status, ids, request: gr.Request):
        return text.escape(refused(roles, request, "assign") or store_view.assign(
            store, user, folder, cat, status, ids, roles.name(request)))

    def unassign(user, folder, cat, status, ids, request: gr.Request):
        return text.escape(refused(roles, request, "assign") or store_view.unassign(
            store, user, folder, cat, status, ids))

    picked = [a_user, a_folder, a_cat, a_status, a_ids]
    a_go.click(assign, picked, a_msg).then(refresh_counts, None, counts)
    a_back.click(unassign, picked, a_msg).then(refresh_counts, None, counts)
    c_save.click(save_cat_checked, [c_id, c_name, c_super, c_kps, c_skel], c_msg).then(refresh_all, g_page, outputs)
    c_delete.click(delete_cat_checked, [c_id, c_move, c_del_anns], c_msg).then(refresh_all, g_page, outputs)
    return ((refresh_counts, counts), (show_page, g_page, page_outs), (gallery, g_ids),
            (import_row, cat_edit, assign_edit))


def export_tab(store: Store, exports: store_view.ExportFolder, roles: Roles):
    """The Export tab; returns (its tools, the note shown instead to a role that may not export)."""
    not_yours = markdown("Exporting the dataset needs the admin role.", visible=False, elem_id="export-not-yours")
    with gr.Column(elem_id="export-tools") as tools:
        markdown("COCO reads an image without annotations as a *negative* example (nothing to find in it), so "
                 "by default only images whose labels are **done** are written (a done image with no objects is "
                 "a true negative). Images still new, proposed or in review would turn their unlabeled objects "
                 "into false negatives for whoever trains on the file.")
        with gr.Row():
            with_images = gr.Checkbox(label="Zip with images", elem_id="export-with-images")
            include_props = gr.Checkbox(label="Include unreviewed proposals (with score) and their images",
                                        elem_id="export-proposals")
            all_images = gr.Checkbox(label="Every image, also those not labeled yet", elem_id="export-all-images")
            fmt = gr.Radio([("COCO", "coco"), ("YOLO (Ultralytics: a zip with images/, labels/, data.yaml)", "yolo")],
                           value="coco", label="Format", elem_id="export-format")
        go = gr.Button("Prepare export", elem_id="export-button")
        out = gr.File(label="Download", elem_id="export-file")
    # one export at a time: preparing one deletes the previous folder, after Gradio copied its file
    def prepare(wi, ip, ai, f, request: gr.Request):
        no = refused(roles, request, "export")
        if no:
            raise gr.Error(no)
        try:
            path = exports.prepare(store, wi, ip, ai, f or "coco")
        except UserError as e:
            raise gr.Error(str(e)) from None
        for line in exports.notes:
            gr.Info(line)
        return path

    go.click(prepare, inputs=[with_images, include_props, all_images, fmt], outputs=out, api_name="export",
             concurrency_limit=1)
    return tools, not_yours


def model_tab(store: Store, options: ModelOptions, roles: Roles, follower: Follower | None = None):
    with gr.Row() as train_row:
        minutes = gr.Number(value=5, label="Minutes to train", elem_id="train-minutes", minimum=0)
        epochs = gr.Number(value=0, label="Or stop after epochs (0: train for the minutes)", precision=0,
                           elem_id="train-epochs", minimum=0)
        size = gr.Radio(["tiny", "full"], value=None, label="Size (blank: the active model's)", elem_id="train-size")
        start = gr.Button("Fine-tune", variant="primary", elem_id="btn-finetune")
        cancel = gr.Button("Cancel", variant="stop", elem_id="btn-cancel")
        every = gr.Number(value=settings.fine_tune_every(store), label="Or by itself after every N saved images "
                          "(0: off)", precision=0, elem_id="auto-every", minimum=0)
        every_b = gr.Button("Set", elem_id="btn-auto-every", size="sm")
    job_md = markdown(elem_id="job-status")
    follow_md = markdown(elem_id="proposals-status")
    progress = gr.HTML(model_view.progress_html(0), elem_id="job-progress")
    start_note = markdown(elem_id="start-note")  # a refused start stays in view (the job status is polled)
    loss_plot = gr.LinePlot(x="iteration", y="loss", label="Training loss", elem_id="loss-plot",
                            x_axis_format="d", y_axis_format=".3~g")  # whole iterations, a readable loss
    versions = gr.Dataframe(headers=model_view.VERSION_HEADERS, interactive=False, elem_id="versions-table",
                            label="Model versions (* = active)")
    with gr.Row() as activate_row:
        v_id = gr.Textbox(label="Version", placeholder="a version id from the table", max_lines=1,
                          elem_id="version-id")
        activate_b = gr.Button("Make active", elem_id="btn-activate")
        v_msg = markdown()
    with gr.Row():
        # points, so that a single version shows; versions are names ("v3") on the axis, in order
        ap_plot = gr.ScatterPlot(x="version", y="AP", color="metric", label="Held-out AP per version",
                                 elem_id="ap-plot", sort="x", y_lim=[0, 1])
        fix_plot = gr.ScatterPlot(x="version", y="value", color="measure", sort="x", y_lim=[0, 1],
                                  label="How much labelers changed proposals", elem_id="corrections-plot")
        secs_plot = gr.ScatterPlot(x="version", y="seconds per image", sort="x",
                                   label="Seconds of labeling per image", elem_id="seconds-plot")
    reviews = gr.Dataframe(headers=model_view.REVIEW_HEADERS, interactive=False, elem_id="reviews-table",
                           label="Review measures per model version (from the saves in the Label tab)")
    fix_note = markdown(elem_id="corrections-note")
    who = gr.Dataframe(headers=model_view.LABELER_HEADERS, interactive=False, elem_id="labelers-table",
                       label=f"Who did what: per labeler and day, the last {model_view.LABELER_DAYS} days "
                             "(app.py stats --by-user for any days)")
    timer = gr.Timer(2.0, active=True)
    last_state, mine = gr.State(None), gr.State(None)  # (job state, versions) last seen; the job this page started

    def tables():
        stats = review_stats(store)  # read once for the two plots and the table
        fixes = model_view.corrections_frame(stats)
        return (model_view.version_rows(store), model_view.ap_frame(store), fixes, model_view.seconds_frame(stats),
                model_view.review_rows(stats), model_view.corrections_note(fixes), model_view.labeler_rows(store))

    def poll(last, job_id):
        j = model_view.job_panel(store, job_id)
        seen = (j["state"], len(model_view.api.list_versions(store)))
        changed = seen != last and (seen[0] in ("done", "failed", "cancelled") or last is None or seen[1] != last[1])
        refreshed = tables() if changed else (gr.update(),) * len(table_outs)  # a version from anywhere
        return (j["markdown"], model_view.progress_html(j["percent"]), j["curve"], seen,
                model_view.proposals_line(store, follower.last_error if follower else "")) + refreshed

    def start_job(e, m, sz, job_id, request: gr.Request):
        no = refused(roles, request, "train")
        if no:
            return no, job_id
        text, new = model_view.start_job(store, e, m, sz, options)
        return ("" if new is not None else text), new if new is not None else job_id

    table_outs = [versions, ap_plot, fix_plot, secs_plot, reviews, fix_note, who]
    timer.tick(poll, [last_state, mine], [job_md, progress, loss_plot, last_state, follow_md] + table_outs)

    def auto_every(n, request: gr.Request):
        return refused(roles, request, "train") or model_view.set_auto_fine_tune(store, n)

    every_b.click(auto_every, every, start_note)
    start.click(start_job, [epochs, minutes, size, mine], [start_note, mine])
    def cancel_job(request: gr.Request):
        return refused(roles, request, "train") or model_view.cancel_latest(store)

    cancel.click(cancel_job, None, job_md)

    def activate(typed, request: gr.Request):
        no = refused(roles, request, "activate")
        if no:
            return no
        try:
            return model_view.activate_version(store, id_field(typed, "version"))
        except UserError as e:
            return text.escape(str(e))

    activate_b.click(activate, v_id, v_msg).then(tables, None, table_outs)
    return tables, table_outs, timer, (train_row, activate_row)


def build_app(store: Store, proposer: BackgroundProposer | None = None,
              exports: store_view.ExportFolder | None = None, options: ModelOptions | None = None,
              roles: Roles | None = None, follow: bool = True) -> gr.Blocks:
    """The page: Label, Dataset, Model and Export tabs on ``store``; the model runs with ``options``; each
    login may do what its role allows (``roles``; without one everyone is the local admin). ``follow``: the
    app re-proposes with each newly active model and starts the automatic fine-tunes (annotator.follow)."""
    roles = roles or Roles(store)
    options = options or ModelOptions()
    proposer = proposer or BackgroundProposer(store, options)
    follower = Follower(store, proposer).start() if follow else None
    exports = exports or store_view.ExportFolder()
    with gr.Blocks(title="maskloop", delete_cache=CACHE_CLEANUP) as demo:
        with gr.Row():
            markdown("# maskloop")
            who = markdown(elem_id="who", visible=roles.login)
        with gr.Tabs() as tabs:
            with gr.Tab("Label", id="label") as label_page:
                label_tab = LabelTab(store, proposer, roles)
                label_tab.build(demo)
            with gr.Tab("Dataset", id="dataset") as dataset:
                (refresh_counts, counts), (show_page, g_page, page_outs), (gallery, g_ids), admin_parts = \
                    dataset_tab(store, roles)
            with gr.Tab("Model", id="model"):
                tables, t_outs, _, train_parts = model_tab(store, options, roles, follower)
            with gr.Tab("Export", id="export"):
                export_parts = export_tab(store, exports, roles)

        def for_role(request: gr.Request):
            """The page as this login's role sees it: what it may not do is hidden (and refused anyway)."""
            role = roles.role(request)
            line = (f"{text.escape(roles.name(request))} · {role or 'no account'} · [log out](/logout)"
                    if roles.login else "")
            return ((line, gr.update(visible=users.may(role, "review")))
                    + tuple(gr.update(visible=users.may(role, a)) for a in ("import", "categories", "assign",
                                                                             "train", "activate", "export"))
                    + (gr.update(visible=not users.may(role, "export")),))

        demo.load(for_role, None, [who, label_tab.review_panel, *admin_parts, *train_parts, *export_parts])

        def open_thumbnail(ids, ls, evt: gr.SelectData, request: gr.Request):
            """A gallery thumbnail clicked: its image opens in the Label tab."""
            k = evt.index if isinstance(evt.index, int) else evt.index[0]
            image_id = ids[k] if 0 <= k < len(ids) else None
            return (gr.Tabs(selected="label"),) + label_tab.open_from(image_id, ls, request)

        label_page.select(label_tab.on_show, [label_tab.sess], [label_tab.sess, label_tab.board],
                          **label_tab.label_events)
        gallery.select(open_thumbnail, [g_ids, label_tab.sess], [tabs, label_tab.sess, label_tab.board],
                       **label_tab.label_events)
        gallery.select(None, js="() => { window.scrollTo({top: 0}); }")  # the Label tab from its top
        def may_label(request):
            no = refused(roles, request, "label")
            if no:
                raise gr.Error(no)

        def assist(image_id: float, box: list[float], request: gr.Request, category_id: float | None = None) -> dict:
            may_label(request)
            return assist_box(proposer, image_id, box, category_id)

        gr.api(assist, api_name="assist_box", api_description=assist_box.__doc__)

        def queue_api(request: gr.Request, n: float = 20, queue: str = "label") -> list[int]:
            may_label(request)
            return next_images(store, n, roles.name(request), queue, roles.role(request))

        def label_api(image_id: float, ops: list[dict], request: gr.Request) -> dict:
            may_label(request)
            return label_image(store, proposer, image_id, ops, roles.name(request), roles.role(request),
                               label_tab.rate)

        gr.api(queue_api, api_name="next_images", api_description=next_images.__doc__)
        gr.api(label_api, api_name="label_image", api_description=label_image.__doc__, concurrency_limit=8)
        demo.load(refresh_counts, outputs=counts)

        def closed(request: gr.Request):
            """The browser tab went away: its pages end (what they held is freed)."""
            label_tab.end_browser(getattr(request, "session_hash", None))

        demo.unload(closed)
        dataset.select(show_page, g_page, page_outs)  # the gallery is drawn when the tab is opened, not on load
        demo.load(tables, outputs=t_outs)
    demo.label_tab = label_tab  # its open pages (launch ends a login's pages when it logs out)
    demo.follower = follower
    return demo


def assist_box(proposer: BackgroundProposer, image_id: int, box: list[float], category_id: int | None = None) -> dict:
    """/assist_box: (image_id, [x0, y0, x1, y1] in image pixels, category_id or None) -> {"category_id",
    "score", "bbox" (xywh), "segmentation" (COCO RLE, counts a string), "keypoints" (flat x, y, v, or
    null)}: the active model's instance for exactly that box. Writes nothing; bad input gets a message."""
    try:
        return proposer.assist_box(_whole(image_id, "image id"), box,
                                   None if category_id is None else _whole(category_id, "category id"))
    except UserError as e:
        raise gr.Error(str(e)) from None


NEXT_QUEUES = {"label": annotations.QUEUE_FILTERS[0], "review": annotations.TO_REVIEW}


def next_images(store: Store, n, user: str = "", queue: str = "label", role: str | None = "admin") -> list[int]:
    """/next_images: (n, queue) -> up to n image ids handed to the logged-in user: of the labeling queue
    (``queue`` "label": every image not done, in a fixed shuffled order, what the Label tab's Next button walks
    through by default) or of the review queue ("review": saves awaiting a verdict, newest first; reviewers
    only). Only images nobody else holds, claimed for the user for claims.API_SECONDS (15 minutes; asking again
    renews the claims on the ones still in the queue), so two people never get the same image; one person holds
    at most claims.MAX_PER_PERSON (20) at once. A save that
    finishes an image, or a verdict, ends its claim (/label_image)."""
    try:
        n = max(0, min(_whole(n, "n"), claims.MAX_PER_PERSON))
        if not isinstance(queue, str) or queue not in NEXT_QUEUES:
            raise UserError(f"queue {queue!r}: one of {', '.join(NEXT_QUEUES)}")
        if queue == "review":
            users.require(role, "review", user)
        ids = claims.queue_for(store, user, NEXT_QUEUES[queue])
        return claims.take(store, user, ids, claims.API_SECONDS, n, where=claims.still_in(NEXT_QUEUES[queue])) \
            if n else []
    except UserError as e:
        raise gr.Error(str(e)) from None


MAX_API_OPS = 500


def label_image(store: Store, proposer: BackgroundProposer, image_id, ops, user: str, role: str = "labeler",
                rate: EditRate | None = None) -> dict:
    """/label_image: (image_id, [edit message, ...]) -> {"messages", "status", "instances"}: open the image,
    apply the canvas's edit messages in order (``{"op": "accept", "index": 0}``, ``{"op": "reject_rest"}``,
    ``{"op": "class", ...}``, ``{"op": "assist", "box": [...]}``, ..., ``{"op": "save"}``; see
    annotator/canvas.py), as the logged-in user, and answer what each said. Without a final save nothing is
    written; a save refused because someone else saved the image meanwhile says so and writes nothing.
    A bad message is refused by name and nothing after it is applied. An image handed to someone else (a live
    claim: db.claims) is refused whole: /next_images hands out images of one's own."""
    try:
        image_id = _whole(image_id, "image id")
        problem = id_problem(image_id)
        if problem:
            raise UserError(f"no image with id {image_id}: {problem}")
        if not isinstance(ops, list) or len(ops) > MAX_API_OPS:
            raise UserError(f"ops must be a list of at most {MAX_API_OPS} edit messages")
        holder = claims.holder(store, image_id, other_than=user)
        if holder is not None and not holder.assigned:  # (an assignment only steers the queues)
            raise UserError(held_note(image_id, holder, writing=True))
        # the call's own page, freed when it answers (nothing of it is kept between calls)
        page = Page("", user=user, role=role, session=LabelSession(store, image_id))  # (refuses a missing id)
        said = []
        for k, op in enumerate(ops):
            wait = rate.take(user, EditRate.cost(op)) if rate is not None else 0.0
            if wait:
                raise UserError(f"edit message {k}: too many edits too fast (nothing after message {k - 1} was "
                                f"applied, and nothing was saved unless a save came before); try again in "
                                f"{max(wait, 0.1):.1f} s")
            try:
                said.append(canvas.apply(page, op, proposer))
            except UserError as e:
                raise UserError(f"edit message {k}: {e}") from None
        return {"messages": said, "status": page.session.status, "instances": len(page.session.visible(0.0))}
    except UserError as e:
        raise gr.Error(str(e)) from None


def _whole(value, what: str) -> int:
    """A JSON number that must be an integer (clients may send 3.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (
            float("inf"), float("-inf")) or value != int(value):
        shown = repr(value)
        raise UserError(f"{what} {shown if len(shown) <= 60 else shown[:57] + '...'} is not an integer")
    return int(value)


DEFAULT_MAX_UPLOAD_MB = 2048  # uploads (images, zips, COCO files) larger than 2 GiB are refused
DEFAULT_USER_UPLOAD_MB = 8192  # what one login may upload while Gradio keeps it (annotator.limits.UploadLimits)
DEFAULT_USER_UPLOAD_FILES = 10_000


def parse_auth(pairs: list[str]) -> list[tuple[str, str]] | None:
    out = []
    for p in pairs:
        user, sep, pw = p.partition(":")
        if not sep or not user or not pw:
            raise UserError(f"--auth {p!r}: expected USER:PASSWORD")
        out.append((user, pw))
    return out or None


def has_login(store: Store, auth: list[str] | None) -> bool:
    """Whether the UI asks for a login: admins given with ``--auth``, or any account in the store."""
    return bool(parse_auth(auth or [])) or users.count(store) > 0


def upload_limits(max_upload_mb: float | None = None, user_upload_mb: float | None = None,
                  user_upload_files: int | None = None) -> tuple[int, UploadLimits]:
    """(the largest file in bytes, each login's upload budget) from the command line's MiB and counts
    (None: the defaults; a login may always upload at least one file of the largest size); UserError naming
    a value that is not positive."""
    mb = DEFAULT_MAX_UPLOAD_MB if max_upload_mb is None else max_upload_mb
    per_user = max(DEFAULT_USER_UPLOAD_MB, mb) if user_upload_mb is None else user_upload_mb
    files = DEFAULT_USER_UPLOAD_FILES if user_upload_files is None else user_upload_files
    for option, value in (("--max-upload-mb", mb), ("--user-upload-mb", per_user), ("--user-upload-files", files)):
        if not value > 0:
            raise UserError(f"{option} must be a positive number, not {value}")
    return int(mb * 2 ** 20), UploadLimits(bytes_per_login=int(per_user * 2 ** 20), files_per_login=int(files))


def launch(store: Store, host: str = "127.0.0.1", port: int = 7860, auth: list[str] | None = None,
           share: bool = False, block: bool = True, max_upload_mb: float | None = None,
           options: ModelOptions | None = None, trusted_proxies: list[str] = (), open_to_everyone: bool = False,
           user_upload_mb: float | None = None, user_upload_files: int | None = None) -> gr.Blocks:
    """Serve the app. With ``auth`` (USER:PASSWORD strings: admins) or any account in the store's users table
    (app.py user add), a login is required for everything that changes state, every request is checked against
    the account as it is now (a removed account or a changed password ends the login at its next request),
    each login may do what its role allows, only roles that may import upload, and failed logins are answered
    slower and slower, per client: the socket's peer, or the address a proxy in ``trusted_proxies`` forwards
    (annotator.access). Without a login the server refuses to listen beyond this machine unless
    ``open_to_everyone`` (access.door). Uploads larger than ``max_upload_mb`` MiB (default
    DEFAULT_MAX_UPLOAD_MB) are refused, and so are a login's uploads past ``user_upload_mb`` MiB or
    ``user_upload_files`` files within the time Gradio keeps them; every request body has a cap
    (annotator.limits)."""
    max_file, budget = upload_limits(max_upload_mb, user_upload_mb, user_upload_files)
    accounts = parse_auth(auth or []) or []
    login = has_login(store, auth)
    access.door(host, share, login, open_to_everyone)
    proxies = access.check_proxies(trusted_proxies)
    roles = Roles(store, admins=[name for name, _ in accounts], login=login)
    sessions = roles.sessions = Sessions(roles.stamp_of) if login else None
    guard = LoginGuard(accounts, lookup=lambda name, pw: users.login_stamp(store, name, pw)) if login else None
    exports = store_view.ExportFolder()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        exports.close()  # the server is shutting down: the last export goes too
        if demo.follower is not None:
            demo.follower.stop()

    demo = build_app(store, exports=exports, options=options, roles=roles)
    label_tab = demo.label_tab
    middleware = [Middleware(
        LoginRequired, sessions=sessions, roles=roles,
        on_logout=lambda name: label_tab.end_login(name, "you logged out: log in and reload the page"),
        on_revoke=lambda name, key, why: label_tab.end_session(key, f"{why}, and reload the page"))] if guard else []
    middleware.append(Middleware(BodyLimits, ledger=UploadLedger(budget)))
    demo.queue(default_concurrency_limit=4)
    with access.forwarded_from(proxies):  # uvicorn reads which peers may forward a client address now
        demo.launch(server_name=host, server_port=port, auth=guard.check if guard else None, share=share,
                    prevent_thread_lock=True, show_error=True, head=HOTKEYS_JS, quiet=True, max_file_size=max_file,
                    app_kwargs={"lifespan": lifespan, "middleware": middleware})
    demo.login_guard = guard  # (its failed attempts by user name and by client)
    if block:  # our own line: Gradio's hint names its launch(share=True), the app's option is --share
        public = f"; public link {demo.share_url}" if share and demo.share_url else " (--share for a public link)"
        door = " (no login: everyone who reaches it is an admin)" if open_to_everyone and not login else ""
        print(f"maskloop is running at {demo.local_url}{public}{door}; Ctrl+C stops it", flush=True)
        demo.block_thread()
    return demo
