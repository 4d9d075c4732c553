"""Browser sessions of the web client: sign-in, session cookies, CSRF tokens, idle expiry, lockout.

The web client (``qx_node.api.ui``) signs in with the host's root password — checked by
:func:`qx_common.passwords.verify`, exactly as the physical console checks it — or with the API token,
and then holds a session; it calls the ordinary node API with it. Nothing here grants more than the API
token does: a session is the token's rights, carried by a cookie instead of a header.

Invariants
----------
* A session id is 256 random bits, sent only as the cookie ``__Host-qx_session`` (HttpOnly, Secure,
  SameSite=Strict, Path=/); only its SHA-256 is kept, so the table holds nothing a reader could replay.
* Every state-changing request (any method but GET/HEAD/OPTIONS) made with the cookie must carry the
  session's CSRF token in ``X-CSRF-Token`` (compared in constant time), and an ``Origin`` header, when
  sent, must be the node's own: otherwise 403. Requests with ``Authorization: Bearer`` never look at the
  cookie and work as before.
* A session ends ``IDLE_SECONDS`` after its last request that was not a background one (a request with
  ``X-Qx-Background: 1`` — the client's polling — does not keep it alive), ``MAX_SECONDS`` after sign-in
  whatever happens, at sign-out, when qx-node restarts (in memory only), and — for a password session —
  as soon as lockdown mode is on (lockdown disables password sign-in; token sessions stay).
* Failed sign-ins (password or token) are counted per source address and over all sources. A source
  with ``SOURCE_FAILURES`` failures in ``WINDOW_SECONDS`` is refused (429, ``Retry-After``) for a back-off
  that doubles with each further failure up to ``MAX_BACKOFF_SECONDS``; ``GLOBAL_FAILURES`` failures in the
  window from all sources together (a distributed guess) refuse every password sign-in the same way.
  While refused, even the right password is refused (it is not checked at all). A success clears the
  source's count, not the global one.

Call order: ``Sessions(clock)`` once per node → per sign-in: ``throttle.check(source)`` → check the
secret → ``throttle.failed(source)`` or ``create(...)`` → per request ``lookup(cookie)`` then
``touch``/``csrf_ok``; ``end(cookie)`` at sign-out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "__Host-qx_session"
CSRF_HEADER = "x-csrf-token"
BACKGROUND_HEADER = "x-qx-background"
IDLE_SECONDS = 15 * 60.0
MAX_SECONDS = 12 * 3600.0
MAX_SESSIONS = 64
WINDOW_SECONDS = 15 * 60.0
SOURCE_FAILURES = 5
GLOBAL_FAILURES = 20
FIRST_BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 15 * 60.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass
class Session:
    via: str  # "password" | "token"
    csrf: str
    created: float
    last_active: float


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class Throttle:
    """Failed sign-ins per source and globally; ``check`` says how long a source must still wait."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, _Failures] = {}
        self._global = _Failures()

    @staticmethod
    def _backoff(failures: int, threshold: int) -> float:
        return min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** max(0, failures - threshold))

    def _prune(self, f: _Failures, now: float) -> None:
        while f.times and f.times[0] <= now - WINDOW_SECONDS:
            f.times.popleft()

    def check(self, source: str) -> float:
        """Seconds this source must wait before a sign-in is even looked at (0: go ahead)."""
        now = self._clock()
        with self._lock:
            f = self._sources.get(source)
            wait = max(0.0, (f.blocked_until if f else 0.0) - now, self._global.blocked_until - now)
        return wait

    def failed(self, source: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._sources) > 4096:  # a flood of sources: forget the ones no longer blocked
                self._sources = {k: v for k, v in self._sources.items() if v.blocked_until > now or v.times}
            f = self._sources.setdefault(source, _Failures())
            for rec, threshold in ((f, SOURCE_FAILURES), (self._global, GLOBAL_FAILURES)):
                self._prune(rec, now)
                rec.times.append(now)
                if len(rec.times) >= threshold:
                    rec.blocked_until = now + self._backoff(len(rec.times), threshold)

    def succeeded(self, source: str) -> None:
        with self._lock:
            self._sources.pop(source, None)


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._by_digest: dict[str, Session] = {}
        self.throttle = Throttle(clock)

    def create(self, via: str) -> tuple[str, Session]:
        """A new session; returns (cookie value, session). The oldest session goes beyond MAX_SESSIONS."""
        sid = secrets.token_urlsafe(32)
        now = self._clock()
        s = Session(via=via, csrf=secrets.token_urlsafe(32), created=now, last_active=now)
        with self._lock:
            self._expire(now)
            while len(self._by_digest) >= MAX_SESSIONS:
                oldest = min(self._by_digest, key=lambda k: self._by_digest[k].last_active)
                del self._by_digest[oldest]
            self._by_digest[_digest(sid)] = s
        return sid, s

    def _expire(self, now: float) -> None:
        for k in [k for k, s in self._by_digest.items() if not self._alive(s, now)]:
            del self._by_digest[k]

    @staticmethod
    def _alive(s: Session, now: float) -> bool:
        return now - s.last_active < IDLE_SECONDS and now - s.created < MAX_SECONDS

    def lookup(self, sid: str) -> Session | None:
        """The live session of this cookie value, or None (unknown, ended or expired: then forgotten)."""
        if not sid:
            return None
        key = _digest(sid)
        now = self._clock()
        with self._lock:
            s = self._by_digest.get(key)
            if s is None:
                return None
            if not self._alive(s, now):
                del self._by_digest[key]
                return None
            return s

    def touch(self, s: Session) -> None:
        s.last_active = self._clock()

    def end(self, sid: str) -> bool:
        with self._lock:
            return self._by_digest.pop(_digest(sid), None) is not None

    def end_password_sessions(self) -> int:
        """Lockdown turned on: password sessions end (token sessions keep the token's rights)."""
        with self._lock:
            gone = [k for k, s in self._by_digest.items() if s.via == "password"]
            for k in gone:
                del self._by_digest[k]
        return len(gone)

    def end_token_sessions(self, keep: str = "") -> int:
        """The API token was rotated: sessions signed in with a token end, but the one of cookie ``keep``
        (the operator who rotated it, if through the page). Password sessions are not the token's."""
        spared = _digest(keep) if keep else None
        with self._lock:
            gone = [k for k, s in self._by_digest.items() if s.via == "token" and k != spared]
            for k in gone:
                del self._by_digest[k]
        return len(gone)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_digest)


def csrf_ok(s: Session, sent: str) -> bool:
    return bool(sent) and hmac.compare_digest(sent.encode(), s.csrf.encode())
