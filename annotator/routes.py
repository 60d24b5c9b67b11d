"""The HTTP routes besides the page (gr.api): /assist_box, /next_images, /label_image. Each checks its
arguments (annotator.messages) and answers a message naming a bad one."""

from __future__ import annotations

import gradio as gr

from annotator import canvas
from annotator.access import Roles
from annotator.background import BackgroundProposer
from annotator.labeling import LabelSession
from annotator.messages import whole
from annotator.page import EditRate, Page
from annotator.widgets import refused
from db import annotations, claims, users
from db.errors import UserError
from db.ids import id_problem
from db.store import Store


def assist_box(proposer: BackgroundProposer, image_id: int, box: list[float], category_id: int | None = None) -> dict:
    """/assist_box: (image_id, [x0, y0, x1, y1] in image pixels, category_id or None) -> {"category_id",
    "score", "bbox" (xywh), "segmentation" (COCO RLE, counts a string), "keypoints" (flat x, y, v, or
    null)}: the active model's instance for exactly that box. Writes nothing; bad input gets a message."""
    try:
        return proposer.assist_box(whole(image_id, "image id"), box,
                                   None if category_id is None else whole(category_id, "category id"))
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
        n = max(0, min(whole(n, "n"), claims.MAX_PER_PERSON))
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
        image_id = whole(image_id, "image id")
        problem = id_problem(image_id)
        if problem:
            raise UserError(f"no image with id {image_id}: {problem}")
        if not isinstance(ops, list) or len(ops) > MAX_API_OPS:
            raise UserError(f"ops must be a list of at most {MAX_API_OPS} edit messages")
        holder = claims.holder(store, image_id, other_than=user)
        if holder is not None and not holder.assigned:  # (an assignment only steers the queues)
            raise UserError(f"image {image_id} is {holder.how} {holder.user}{holder.until_text}: nothing was applied "
                            "(/next_images hands you images)")
        # the call's own page, freed when it answers (nothing of it is kept between calls)
        page = Page("", user=user, role=role, session=LabelSession(store, image_id))  # (refuses a missing id)
        said = []
        for k, op in enumerate(ops):
            wait = rate.take(user, canvas.cost(op)) if rate is not None else 0.0
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


def add(store: Store, proposer: BackgroundProposer, roles: Roles, rate: EditRate) -> None:
    """The routes, on the page being built (inside its gr.Blocks): each needs a login that may label."""
    def may_label(request):
        no = refused(roles, request, "label")
        if no:
            raise gr.Error(no)

    def assist(image_id: float, box: list[float], request: gr.Request, category_id: float | None = None) -> dict:
        may_label(request)
        return assist_box(proposer, image_id, box, category_id)

    def queue_api(request: gr.Request, n: float = 20, queue: str = "label") -> list[int]:
        may_label(request)
        return next_images(store, n, roles.name(request), queue, roles.role(request))

    def label_api(image_id: float, ops: list[dict], request: gr.Request) -> dict:
        may_label(request)
        return label_image(store, proposer, image_id, ops, roles.name(request), roles.role(request), rate)

    gr.api(assist, api_name="assist_box", api_description=assist_box.__doc__)
    gr.api(queue_api, api_name="next_images", api_description=next_images.__doc__)
    gr.api(label_api, api_name="label_image", api_description=label_image.__doc__, concurrency_limit=8)
