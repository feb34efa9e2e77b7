"""The dashboard's organisation keys (admins): every key pair's version and fingerprint, and a
new pair made in the browser (api/static/keys.js). The private key is protected under the new
passphrase there, as core/sealing.py protects it, and only then uploaded through the API
(POST /api/v1/org/keys): the server never holds an organisation private key in clear."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard import reader
from api.deps import NowDep, SessionDep
from api.errors import N_
from api.pages import render
from core import org_keys
from core.accounts import MIN_PASSPHRASE
from core.models import Organisation

router = APIRouter(include_in_schema=False)

ROTATED = N_(
    "The new key pair is in use: new items are sealed to it. Older items still open with the "
    "passphrase of the key they were sealed to."
)


def fingerprint(public_key: bytes) -> str:
    """What two responders read to each other to know they hold the same key."""
    digest = hashlib.sha256(public_key).hexdigest()[:20]
    return " ".join(digest[i : i + 4] for i in range(0, 20, 4))


@router.get("/keys")
async def keys_page(
    request: Request, session: SessionDep, now: NowDep, notice: str | None = None
) -> Response:
    who = await reader(request, session, now, "org:admin")
    if isinstance(who, Response):
        return who
    org = await session.get(Organisation, who.principal.org_id)
    assert org is not None
    keys = [
        (k, fingerprint(k.public_key), k.public_key == org.public_key)
        for k in reversed(await org_keys.history(session, org))
    ]
    return render(
        request,
        "keys.html",
        me=who,
        keys=keys,
        min_passphrase=MIN_PASSPHRASE,
        notice=ROTATED if notice == "key" else None,
    )
