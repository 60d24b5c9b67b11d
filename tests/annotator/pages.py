"""The browser page a test's LabelSession stands in for (annotator.page.Page), one per session."""

import weakref

from annotator.labeling import LabelSession
from annotator.page import Page

_PAGES: "weakref.WeakKeyDictionary[LabelSession, Page]" = weakref.WeakKeyDictionary()


def page_of(ls: LabelSession, user: str | None = None, role: str = "admin") -> Page:
    """The page holding ``ls`` (made on first use, as the store's user and an admin unless given)."""
    page = _PAGES.get(ls)
    if page is None:
        page = _PAGES[ls] = Page(f"test-{id(ls)}", user=user or ls.store.settings.user, role=role, session=ls)
    elif user is not None:
        page.user = user
    return page
