"""The dashboard in this process, through a browser-like client: cookies kept, the sign-in form's
and the pages' CSRF tokens read from the HTML as a browser would submit them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2

from tests.support.api import InProcessApi

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Dashboard:
    """The dashboard in this process; ``client(role)`` is a browser-like client signed in as ``role``."""

    def __init__(self, api: InProcessApi) -> None:
        self.api = api

    def anonymous(self) -> httpx2.Client:
        return httpx2.Client(transport=self.api.started._transport, base_url=self.api.started.base_url)

    def sign_in(self, client: httpx2.Client, secret: str) -> httpx2.Response:
        form = client.get("/login")
        csrf = CSRF.search(form.text)
        assert csrf is not None, form.text
        return client.post("/login", data={"token": secret, "csrf_token": csrf.group(1), "next": "/"})

    @contextmanager
    def client(self, role: str) -> Iterator[httpx2.Client]:
        with self.anonymous() as client:
            signed_in = self.sign_in(client, self.api.tokens[role])
            assert signed_in.status_code == 303, signed_in.text
            yield client


def csrf_of(html: str) -> str:
    """The CSRF token the page's forms carry."""
    found = CSRF.search(html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)
