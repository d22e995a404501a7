"""Request dependencies. Handlers read like sentences: `def get_job(job_id: str, session: SessionDep, ...)`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from service.auth import Principal
from service.dispatch import DispatchBuffer, Dispatcher
from service.errors import Forbidden, RateLimited, Unauthorized
from service.keys.service import authenticate
from service.ratelimit import RateLimiter, count_auth_failure, refuse_if_failing
from service.settings import Settings
from service.storage import Storage


@dataclass
class AppState:
    settings: Settings
    sessions: sessionmaker[Session]
    storage: Storage
    dispatcher: Dispatcher
    limiter: RateLimiter


# The two below are async because they never block: FastAPI runs them on the event loop instead of sending each
# through the thread pool, which costs a thread hand-off per dependency per request.
async def get_state(request: Request) -> AppState:
    return request.app.state.services


async def get_dispatch_buffer(request: Request) -> DispatchBuffer:
    buffer = getattr(request.state, "dispatch_buffer", None)
    if buffer is None:
        buffer = request.state.dispatch_buffer = DispatchBuffer()
    return buffer


StateDep = Annotated[AppState, Depends(get_state)]
BufferDep = Annotated[DispatchBuffer, Depends(get_dispatch_buffer)]


def get_session(state: StateDep, buffer: BufferDep) -> Iterator[Session]:
    """One transaction per request: commit on success, then send buffered wake-ups; roll back on error."""
    with state.sessions() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            buffer.discard()
            raise
    buffer.flush(state.dispatcher)


# scope="function": the commit happens before the response is sent, so a client never sees an uncommitted job.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <api key>'")
    return token.strip()


def get_principal(request: Request, state: StateDep, session: SessionDep) -> Principal:
    address = request.client.host if request.client else "unknown"
    refuse_if_failing(state.limiter, address)  # before the lookup: a flood of bad keys never reaches the database
    try:
        principal = authenticate(session, _bearer(request))
        if principal is None:
            raise Unauthorized("unknown or revoked API key")
    except Unauthorized:
        count_auth_failure(state.limiter, address)
        raise
    wait = state.limiter.acquire(principal.key_id)
    if wait > 0:
        raise RateLimited(state.limiter.retry_after_s(wait))
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this route needs an admin key")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
