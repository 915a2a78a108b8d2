"""smss — a Python client for the smss message queue (wire protocol version 1).

One file, standard library only, Python 3.9 or later. Copy it into your project
or put its directory on ``PYTHONPATH``; ``import smss``.

smss is a small persistent message queue: topics hold messages in a commit
log, every write gets the next value of one global, increasing *event id*, and
subscribers read from any event id, in batches that they acknowledge. This
module speaks the server's text protocol (README.md, "Protocol") over
blocking TCP sockets with timeouts, or TLS (``ssl_context=``).

Quick start
-----------

::

    import smss

    with smss.Client("127.0.0.1", 12301, token=None) as c:
        c.create("jobs")                                  # -> event id
        eid = c.publish("jobs", b"hello", {"kind": "greeting"})
        ids = c.publish_many("jobs", [(b"a", None), (b"b", {"n": "2"})])
        c.publish_delayed("jobs", b"later", delay_ms=5000)

        # A plain subscription, from the oldest retained message.
        with c.subscribe("jobs", 0, batch=100) as sub:
            for batch in sub:                  # blocks until messages arrive
                for m in batch:                # smss.Message
                    handle(m.event_id, m.headers, m.payload)
                batch.ack()                    # the next batch may come now
        print(sub.end_reason)                  # "deleted", "expired", "stopped"…

        # A consumer group: the server keeps the position; one subscriber of
        # the group is active, the others wait (standby) and take over.
        with c.subscribe("jobs", "-", group="workers", max_deliver=5,
                         dlq="jobs.dead",
                         on_standby=lambda s: log("waiting to take over")) as sub:
            for batch in sub:
                process(batch)
                batch.ack()                    # commits the group's position

The delivery guarantee, and what application code must do
-----------------------------------------------------------

* **Consumers get every message at least once.** A batch that was delivered but
  not acknowledged (the consumer crashed, its connection broke, it missed the
  ``ack_ms`` deadline) is delivered again: to the same ``Subscription`` after
  it reconnects, or to the group's next subscriber. So make processing
  idempotent: event ids only grow within a topic, so remembering the last event
  id you fully processed (durably, with your results) and skipping ids at or
  below it is enough. Acknowledge a batch only once it is processed.
* **A write whose connection dropped has an unknown outcome** — unless it
  carries a dedup key. If the connection breaks (or times out) after a PUB,
  MPUB, DPUB, CREATE, DELETE, GROUPDEL or PROMOTE was sent and before its
  reply arrived, the server may or may not have written it. A publish with a
  ``key=`` (every entry keyed, for the batch methods) is re-sent with the same
  key on a new connection, within ``reconnect_timeout``: the server writes a
  key at most once within ``publish.dedupWindowMs`` (default 2 minutes) and
  answers a repeat with the first id, ``.dup`` set — that is what makes the
  retry safe. Any other write is never re-sent by this client:
  it raises :class:`UnknownOutcome`, naming the command. Retry only what is
  safe to repeat in your application (a duplicate message your idempotent
  consumers skip is usually fine; a duplicate CREATE gets ``Exists``).
  Reads (PING, LIST, INFO, STATS, SLAVES, ROLE, GROUPS) are retried after a
  reconnect, since repeating them changes nothing.
* A reply ``ERR`` means nothing was written: those raise a
  :class:`ServerError` subclass and are never "unknown".

Connections, timeouts and reconnection
--------------------------------------

A :class:`Client` holds one connection for commands, opened lazily and
re-opened when it is found closed: before each request the client checks,
without blocking, whether the server has closed the socket (a restart, an
idle cut), so a write is never sent into a connection that is known dead.
Opening a connection is retried with capped exponential backoff
(``backoff_initial`` doubling up to ``backoff_max`` seconds) for at most
``reconnect_timeout`` seconds, then :class:`ConnectionError` is raised. With
``token=`` the client sends ``AUTH`` right after connecting (the server closes
connections that do not authenticate within ``timeout.auth``).

``timeout`` bounds every socket read and write of a command (seconds). A
command that times out closes its connection: its reply could otherwise be
read as the next command's.

Each :meth:`Client.subscribe` opens a connection of its own, so the client
stays usable for publishing while subscriptions run. A client is not
thread-safe: use one per thread (subscriptions may be used from the thread
that iterates them; :meth:`Subscription.stop` may be called from another).

Subscriptions
-------------

``client.subscribe(topic, start, batch=, ack_ms=, group=, max_deliver=, dlq=, mode=)``
returns a :class:`Subscription`, an iterator of :class:`Batch` objects (a
``list`` of :class:`Message`). ``start`` is ``0`` (the oldest retained
message), an event id N (messages after N), ``"$"`` (only new messages) or,
with a group, ``"-"`` (the group's committed position; the default with a
group). A number or ``"$"`` with a group moves the group's position there.

* ``batch.ack()`` tells the server to send the next batch (with a group it also
  commits the batch's last event id as the group's position). Asking for the
  next batch acknowledges the previous one if you did not: finishing the loop
  body counts as "processed". Leaving the loop with ``break`` or an exception
  does not acknowledge the current batch.
* ``sub.stop()`` (also called when the ``with`` block ends) ends the
  subscription cleanly (``STOP``): nothing more is committed, and an
  unacknowledged batch is redelivered later without counting as a failed
  delivery. ``sub.close()`` drops the connection instead, as a crash would (for
  a group, that counts as a failed delivery towards ``max_deliver``).
* The server sends ``ALIVE`` while there is nothing to deliver; the
  subscription treats ``liveness`` seconds of silence (no batch, no ALIVE) as
  a dead connection. Set it above the server's ``timeout.server.alive``
  (default 30 s; the default ``liveness`` is 75 s).
* ``END deleted`` / ``END expired`` (the topic, or the group with GROUPDEL,
  is gone) end the iteration; ``sub.end_reason`` says why (``"stopped"`` after
  :meth:`Subscription.stop`).
* Exclusive consumer groups: if another subscriber of the group is active, the
  server answers ``STANDBY``; ``sub.standby`` becomes True and ``on_standby(sub)``
  is called, and iteration simply waits. When the active subscriber's
  connection ends, this one takes over from the group's committed position and
  the next batch arrives (``sub.standby`` becomes False, ``on_active(sub)`` is
  called). Nothing else is needed.
* Shared consumer groups (``mode="shared"``, a worker pool): every subscriber
  of the group is active and gets batches of its own at the same time; a batch
  one of them does not acknowledge goes to another. No order across members.
  :func:`run_workers` runs such a pool of threads around a handler::

      pool = smss.run_workers("127.0.0.1:12301", "jobs", "workers", handle, workers=8)
      ...
      pool.stop()

  ``client.groups(topic)`` shows a shared group's ``(members, pending)`` in
  :attr:`GroupInfo.shared`.
* Reconnection (``reconnect=True``, the default): when the connection breaks or
  goes silent, the subscription reconnects with backoff and subscribes again —
  a plain subscription after the last event id it acknowledged (the
  unacknowledged batch comes again), a group subscription from the group's
  committed position (``-``). ``"$"`` is resolved to the topic's last event id
  (``INFO``) before the first SUB so a reconnect resumes exactly where it was.
  ``sub.reconnects`` counts them. If the topic was deleted while it was away,
  the SUB's ``NoTopic`` is raised from the iteration; if no connection can be
  made within ``reconnect_timeout``, :class:`ConnectionError` is.

Errors
------

Every exception derives from :class:`SmssError`.

* :class:`ServerError` — the server answered ``ERR <CODE> <text>``; ``.code``
  and ``.text`` hold them. One subclass per code: :class:`BadRequest`
  (BADREQ), :class:`UnknownCommand` (UNKNOWN), :class:`NoTopic`,
  :class:`Exists`, :class:`TooBig`, :class:`ReadOnly` (a write sent to a
  slave), :class:`NoAuth`, :class:`Busy` (connection limit), :class:`NoSlave`
  (``replication.minSlaves`` not met), :class:`Internal`. A code this module
  does not know yet raises plain :class:`ServerError`.
* :class:`InvalidArgument` (a :class:`BadRequest` and a ``ValueError``) — an
  argument this client refused before sending: a topic or group name that is
  not 1-128 bytes of ``A-Z a-z 0-9 . _ -``, a header key that is not 1-64 such
  bytes, a header value that is not 0-1024 bytes of visible ASCII
  (0x21-0x7E), more than 32 headers, a request line over 4096 bytes, a
  negative number, ``life_ms`` between 1 and 999, a ``delay_ms`` of 0.
* :class:`ConnectionError` — I/O failed (also a ``builtins.ConnectionError``).
  :class:`UnknownOutcome` is the ConnectionError of a write whose reply never
  came; ``.command`` names it (``"PUB"``, ``"MPUB"``…), ``.done_ids`` lists the
  ids already confirmed when a multi-request helper was cut off.
* :class:`ProtocolError` — the server sent something this client cannot parse.

Writes sent to a slave raise :class:`ReadOnly`; to fail over, send
:meth:`Client.promote` to the slave and point clients at it.

Publishing with a dedup key
---------------------------

``client.publish("orders", data, key="order-17")`` sends the reserved header
``msgid=order-17`` (1-128 bytes of visible ASCII; keys are per topic). The
returned id is an :class:`PubId` (an ``int``) whose ``.dup`` is True when the
server had seen the key within its window and wrote nothing: the id is then
the first publish's. :meth:`Client.publish_delayed` takes ``key=`` too; for
:meth:`Client.publish_batch` and :meth:`Client.publish_many` give each message
as ``(payload, headers, key)``; their id lists (:class:`IdList`) carry
``.dup``. An MPUB is atomic, so it is either new or the exact repeat of one
earlier MPUB (same keys, same order); sharing only some keys with earlier
messages raises :class:`BadRequest`. The server remembers keys for
``publish.dedupWindowMs`` and at most ``publish.dedupMaxKeys`` of them (oldest
out first), across restarts and failovers.

Not in this version
-------------------

TLS connections need server support that smss does not have yet; this module
will add them (an ``ssl_context=`` argument on :class:`Client`) when it does.
"""

import builtins
import re
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

__all__ = [
    "Client", "Subscription", "Batch", "Message", "TopicInfo", "GroupInfo", "SlaveInfo",
    "RoleInfo", "SmssError", "ServerError", "BadRequest", "InvalidArgument", "UnknownCommand",
    "NoTopic", "Exists", "TooBig", "ReadOnly", "NoAuth", "Busy", "NoSlave", "Internal",
    "ConnectionError", "UnknownOutcome", "ProtocolError", "DEFAULT_PORT",
    "WorkerPool", "run_workers", "PubId", "IdList",
]

DEFAULT_PORT = 12301
# The protocol's line limit, counting the CRLF (PROTOCOL.md, Framing).
MAX_LINE = 4096
MAX_HEADERS = 32
MAX_HEADER_VALUE = 1024
# Reply lines are server-made and short; a generous bound still keeps a
# confused peer from growing a line without end.
_MAX_REPLY_LINE = 65536

_NAME = re.compile(rb"[A-Za-z0-9._-]{1,128}\Z")
_KEY = re.compile(rb"[A-Za-z0-9._-]{1,64}\Z")
_VALUE = re.compile(rb"[\x21-\x7e]{0,1024}\Z")
# The reserved header of a publish's dedup key, and the key's rule.
_DEDUP_HEADER = b"msgid"
_DEDUP_KEY = re.compile(rb"[\x21-\x7e]{1,128}\Z")

Payload = Union[bytes, bytearray, memoryview, str]
Headers = Optional[Dict[str, Any]]


# ----------------------------------------------------------------- errors

class SmssError(Exception):
    """Base class of every exception this module raises."""


class ServerError(SmssError):
    """The server answered ``ERR <code> <text>``; nothing was written."""

    code = ""

    def __init__(self, code: str, text: str):
        super().__init__("%s %s" % (code, text) if text else code)
        self.code = code
        self.text = text


class BadRequest(ServerError):
    """``ERR BADREQ``: malformed request, bad argument or bad name."""


class InvalidArgument(BadRequest, ValueError):
    """An argument refused by this client before anything was sent."""

    def __init__(self, text: str):
        super().__init__("BADREQ", text)


class UnknownCommand(ServerError):
    """``ERR UNKNOWN``: the server has no such command."""


class NoTopic(ServerError):
    """``ERR NOTOPIC``: the topic does not exist."""


class Exists(ServerError):
    """``ERR EXISTS``: the topic exists already."""


class TooBig(ServerError):
    """``ERR TOOBIG``: a payload over ``limits.maxPayload`` (or an MPUB over
    ``limits.maxBatchBytes``); the server closes the connection after it."""


class ReadOnly(ServerError):
    """``ERR READONLY``: a write (or group subscription) sent to a slave."""


class NoAuth(ServerError):
    """``ERR NOAUTH``: AUTH missing or wrong."""


class Busy(ServerError):
    """``ERR BUSY``: the server's connection limit was reached."""


class NoSlave(ServerError):
    """``ERR NOSLAVE``: ``replication.minSlaves`` slaves did not have the write
    in time; nothing was written."""


class Internal(ServerError):
    """``ERR INTERNAL``: the server failed; nothing was written."""


Unknown = UnknownCommand

_ERRORS = {
    "BADREQ": BadRequest, "UNKNOWN": UnknownCommand, "NOTOPIC": NoTopic, "EXISTS": Exists,
    "TOOBIG": TooBig, "READONLY": ReadOnly, "NOAUTH": NoAuth, "BUSY": Busy,
    "NOSLAVE": NoSlave, "INTERNAL": Internal,
}


class ConnectionError(SmssError, builtins.ConnectionError):  # noqa: A001 (documented name)
    """Connecting, sending or receiving failed (or timed out)."""


class UnknownOutcome(ConnectionError):
    """The connection broke after the write ``command`` was sent and before its
    reply arrived: the server may or may not have written it. Never retried by
    this client. ``done_ids`` holds the event ids confirmed before the break
    (for :meth:`Client.publish_many`)."""

    def __init__(self, command: str, cause: BaseException, done_ids: Optional[List[int]] = None):
        super().__init__("%s: the connection broke before the reply (%s); the server may or may "
                         "not have written it" % (command, cause))
        self.command = command
        self.cause = cause
        self.done_ids = list(done_ids or [])


class ProtocolError(SmssError):
    """The server sent a reply this client did not expect."""


class PubId(int):
    """The event id of a publish; ``.dup`` is True when the publish carried a
    dedup key the server had seen within its window: nothing was written and
    this is the first publish's id."""

    dup = False

    def __new__(cls, value: int, dup: bool = False) -> "PubId":
        obj = super().__new__(cls, value)
        obj.dup = dup
        return obj


class IdList(list):
    """The event ids of a batch publish; ``.dup`` is True when the whole MPUB
    repeated an earlier keyed one (nothing written; its ids)."""

    dup = False


def error_from_line(line: str) -> ServerError:
    """The exception for an ``ERR <CODE> <text>`` reply line."""
    parts = line.split(" ", 2)
    code = parts[1] if len(parts) > 1 else ""
    text = parts[2] if len(parts) > 2 else ""
    return _ERRORS.get(code, ServerError)(code, text)


# ------------------------------------------------------------ value types

class Message(NamedTuple):
    """One delivered message. ``headers`` keeps the order they were sent in
    (a repeated key keeps its last value)."""

    event_id: int
    timestamp_ms: int
    headers: Dict[str, str]
    payload: bytes


class TopicInfo(NamedTuple):
    """A ``TOPIC`` line: ``expires_ms`` is 0 without a lifetime; ``first_id``
    and ``last_id`` are 0 when the topic holds no message."""

    name: str
    created_ms: int
    expires_ms: int
    messages: int
    first_id: int
    last_id: int


class GroupInfo(NamedTuple):
    """A ``GROUP`` line: the group has consumed every message up to
    ``committed_id``; ``lag`` counts the retained messages after it."""

    name: str
    committed_id: int
    active: bool
    standby_count: int
    lag: int
    #: A shared group with members: (members, messages they hold
    #: unacknowledged); None for an exclusive group or one without members.
    shared: Optional[Tuple[int, int]] = None


class SlaveInfo(NamedTuple):
    """A ``SLAVE`` line of a master's SLAVES."""

    addr: str
    acked_event_id: int
    lag_events: int
    lag_ms: int
    state: str


class RoleInfo(NamedTuple):
    """``ROLE``: ``role`` is "master" or "slave"; ``history`` is 16 hex digits."""

    role: str
    epoch: int
    history: str
    last_event_id: int


# ------------------------------------------------------- argument checks

def _ascii(value: Any) -> bytes:
    """``value`` as ASCII bytes; anything else fails the rule checks (a
    lenient encoding would turn "\u00e9" into "?" and pass)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        return str(value).encode("ascii")
    except UnicodeEncodeError:
        return b"\x00"


def _name(value: str, what: str = "topic") -> bytes:
    b = _ascii(value)
    if not _NAME.match(b):
        raise InvalidArgument("bad %s name %r: 1-128 bytes of A-Z a-z 0-9 . _ -" % (what, value))
    return b


def _uint(value: int, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument("%s must be a non-negative integer, not %r" % (what, value))
    return str(value).encode()


def _payload(data: Payload) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgument("payload must be bytes or str, not %s" % type(data).__name__)


def _headers(headers: Headers) -> List[bytes]:
    """``key=value`` tokens, checked as the protocol's rules say."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else list(headers)
    out = []
    for key, value in items:
        k = _ascii(key)
        if not _KEY.match(k):
            raise InvalidArgument("bad header key %r: 1-64 bytes of A-Z a-z 0-9 . _ -" % (key,))
        if isinstance(value, bool) or not isinstance(value, (str, bytes, int)):
            raise InvalidArgument("header %r: value must be str, bytes or int" % (key,))
        v = _ascii(value)
        if not _VALUE.match(v):
            raise InvalidArgument("header %r: value must be 0-1024 bytes of visible ASCII "
                                  "(0x21-0x7E, no spaces)" % (key,))
        out.append(k + b"=" + v)
    if len(out) > MAX_HEADERS:
        raise InvalidArgument("%d headers: at most %d" % (len(out), MAX_HEADERS))
    return out


def _keyed(headers: Headers, key: Any) -> List[bytes]:
    """The header tokens of a message, with the dedup key first when given."""
    out = _headers(headers)
    if any(h.split(b"=", 1)[0] == _DEDUP_HEADER for h in out):
        if key is not None:
            raise InvalidArgument("give the dedup key as key= or as a msgid header, not both")
        return out
    if key is None:
        return out
    if isinstance(key, bool) or not isinstance(key, (str, bytes, int)):
        raise InvalidArgument("key must be str, bytes or int")
    k = _ascii(key)
    if not _DEDUP_KEY.match(k):
        raise InvalidArgument("bad dedup key %r: 1-128 bytes of visible ASCII (no spaces)" % (key,))
    if len(out) + 1 > MAX_HEADERS:
        raise InvalidArgument("%d headers and a key: at most %d headers" % (len(out), MAX_HEADERS))
    return [_DEDUP_HEADER + b"=" + k] + out


def _has_key(hdrs: List[bytes]) -> bool:
    return any(h.split(b"=", 1)[0] == _DEDUP_HEADER for h in hdrs)


def _line(*tokens: bytes) -> bytes:
    line = b" ".join(tokens) + b"\r\n"
    if len(line) > MAX_LINE:
        raise InvalidArgument("request line of %d bytes: at most %d with its CRLF (headers travel "
                              "on the line)" % (len(line), MAX_LINE))
    return line


def _parse_headers(tokens: Sequence[str]) -> Dict[str, str]:
    headers = {}
    for t in tokens:
        k, sep, v = t.partition("=")
        if not sep:
            raise ProtocolError("header without '=': %r" % t)
        headers[k] = v
    return headers


def _ints(parts: Sequence[str], line: str) -> List[int]:
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ProtocolError("expected numbers in %r" % line) from None


def _host_port(host: str, port: Optional[int]) -> Tuple[str, int]:
    if port is None:
        h, sep, p = host.rpartition(":")
        if sep and p.isdigit():
            return h.strip("[]"), int(p)
        return host, DEFAULT_PORT
    return host, port


# ------------------------------------------------------------ connection

class _Conn:
    """One socket with a buffered reader; broken for good after any I/O error."""

    def __init__(self, addr: Tuple[str, int], timeout: float, token: Optional[str],
                 ssl_context: Optional["ssl.SSLContext"] = None):
        try:
            self.sock = socket.create_connection(addr, timeout=timeout)
        except OSError as e:
            raise ConnectionError("connect to %s:%d: %s" % (addr[0], addr[1], e)) from e
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            # The handshake happens here: a certificate the context does not
            # trust (or a plain port) fails now, as a connection error.
            try:
                self.sock = ssl_context.wrap_socket(self.sock, server_hostname=addr[0])
            except (OSError, ssl.SSLError) as e:
                self.sock.close()
                raise ConnectionError("TLS handshake with %s:%d: %s" % (addr[0], addr[1], e)) from e
        self.rfile = self.sock.makefile("rb", buffering=65536)
        self.closed = False
        self.broken = False
        self.send_lock = threading.Lock()
        try:
            # A full server answers the new connection with ERR BUSY at once;
            # with a token, AUTH first (the server closes connections that
            # wait too long). A PING otherwise surfaces BUSY here, not later.
            if token is not None:
                self.send(_line(b"AUTH", token.encode("ascii")))
            else:
                self.send(b"PING\r\n")
            reply = self.read_line()
            if reply.startswith("ERR "):
                raise error_from_line(reply)
            if reply not in ("OK", "PONG"):
                raise ProtocolError("unexpected reply to AUTH/PING: %r" % reply)
        except BaseException:
            self.close()
            raise

    def set_timeout(self, timeout: Optional[float]) -> None:
        self.sock.settimeout(timeout)

    def send(self, data: bytes) -> None:
        """Sends all of ``data``. On failure the socket stays open for reading:
        the server may have answered (``ERR TOOBIG``) before it closed."""
        try:
            with self.send_lock:
                self.sock.sendall(data)
        except OSError as e:
            self.broken = True
            raise ConnectionError("send: %s" % (e or "timed out")) from e

    def read_line(self) -> str:
        try:
            raw = self.rfile.readline(_MAX_REPLY_LINE)
        except OSError as e:  # includes socket.timeout
            self.close()
            raise ConnectionError("receive: %s" % (e or "timed out")) from e
        if not raw:
            self.close()
            raise ConnectionError("the server closed the connection")
        if not raw.endswith(b"\n"):
            self.close()
            raise ProtocolError("reply line without an end: %r" % raw[:200])
        return raw.rstrip(b"\r\n").decode("ascii", "replace")

    def read_exact(self, n: int) -> bytes:
        try:
            data = self.rfile.read(n + 2)
        except OSError as e:
            self.close()
            raise ConnectionError("receive: %s" % (e or "timed out")) from e
        if len(data) < n + 2:
            self.close()
            raise ConnectionError("the server closed the connection inside a payload")
        if data[n:] != b"\r\n":
            self.close()
            raise ProtocolError("payload not followed by CRLF")
        return data[:n]

    def looks_dead(self) -> bool:
        """True when the server has closed this idle connection or sent
        something unasked (an ERR before closing): no request is in flight,
        so anything readable means the connection cannot be used."""
        if self.closed or self.broken:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for f in (self.rfile, self.sock):
            try:
                f.close()
            except OSError:
                pass


class _Settings(NamedTuple):
    addr: Tuple[str, int]
    token: Optional[str]
    timeout: float
    connect_timeout: float
    reconnect: bool
    reconnect_timeout: float
    backoff_initial: float
    backoff_max: float
    ssl_context: Optional["ssl.SSLContext"]


def _connect_with_backoff(s: _Settings, deadline: Optional[float] = None) -> _Conn:
    """Opens a connection, retrying with capped exponential backoff until the
    deadline. Errors that a retry cannot fix (NOAUTH) are raised at once."""
    if deadline is None:
        deadline = time.monotonic() + (s.reconnect_timeout if s.reconnect else 0)
    delay = s.backoff_initial
    while True:
        try:
            return _Conn(s.addr, s.connect_timeout, s.token, s.ssl_context)
        except (ConnectionError, Busy) as e:
            left = deadline - time.monotonic()
            if not s.reconnect or left <= 0:
                if isinstance(e, Busy):
                    raise
                raise ConnectionError("could not connect to %s:%d: %s" % (s.addr[0], s.addr[1], e)) from e
            time.sleep(min(delay, left))
            delay = min(delay * 2, s.backoff_max)


# ---------------------------------------------------------------- client

class Client:
    """A connection to one smss server for commands; subscriptions open their own.

    ``Client("host", 12301)`` or ``Client("host:12301")``. Keyword arguments:

    * ``token`` — sent with ``AUTH`` on every (re)connection (``auth.token``).
    * ``timeout`` — seconds for each socket operation of a command (default 10).
    * ``connect_timeout`` — seconds for one TCP connect (default 5).
    * ``reconnect`` — re-open a closed connection and retry reads (default True).
      Writes are never re-sent (see :class:`UnknownOutcome`).
    * ``reconnect_timeout`` — how long to keep trying to connect (default 30 s).
    * ``backoff_initial``, ``backoff_max`` — the retry delay starts at the first
      and doubles up to the second (defaults 0.05 s and 2 s).
    * ``ssl_context`` — an :class:`ssl.SSLContext` to speak TLS to the server's
      ``tls.port`` (the host name is checked against its certificate), e.g.
      ``ssl.create_default_context(cafile="ca.pem")``; add
      ``ctx.load_cert_chain("client.pem", "client-key.pem")`` for ``tls.clientCa``.

    The connection opens on first use (or with :meth:`connect`). Use the client
    as a context manager, or call :meth:`close`.
    """

    def __init__(self, host: str = "127.0.0.1", port: Optional[int] = None, *,
                 token: Optional[str] = None, timeout: float = 10.0, connect_timeout: float = 5.0,
                 reconnect: bool = True, reconnect_timeout: float = 30.0,
                 backoff_initial: float = 0.05, backoff_max: float = 2.0,
                 ssl_context: Optional["ssl.SSLContext"] = None):
        if token is not None and not re.match(r"[\x21-\x7e]{1,1024}\Z", token):
            raise InvalidArgument("the token must be 1-1024 bytes of visible ASCII")
        self._s = _Settings(_host_port(host, port), token, timeout, connect_timeout, reconnect,
                            reconnect_timeout, backoff_initial, backoff_max, ssl_context)
        self._conn = None  # type: Optional[_Conn]

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return "%s:%d" % self._s.addr

    # --- lifecycle

    def connect(self) -> "Client":
        """Opens the connection now (it otherwise opens on first use)."""
        self._ensure()
        return self

    def close(self) -> None:
        """Sends QUIT (best effort) and closes the connection."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                conn.set_timeout(min(self._s.timeout, 1.0))
                conn.send(b"QUIT\r\n")
                conn.read_line()
            except SmssError:
                pass
            conn.close()

    quit = close

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _ensure(self) -> _Conn:
        conn = self._conn
        if conn is not None and conn.looks_dead():
            conn.close()
            conn = None
        if conn is None:
            conn = _connect_with_backoff(self._s)
            conn.set_timeout(self._s.timeout)
            self._conn = conn
        return conn

    # --- the request/response core

    def _request(self, command: str, data: bytes, read: Callable[[_Conn], Any], *, safe: bool) -> Any:
        """Sends ``data`` and parses the reply with ``read``. A read request,
        or a publish whose every message has a dedup key (``safe``: repeating
        it changes nothing), whose connection breaks is re-sent on a new
        connection, within ``reconnect_timeout``; another write raises
        UnknownOutcome."""
        deadline = time.monotonic() + self._s.reconnect_timeout
        delay = self._s.backoff_initial
        while True:
            conn = self._ensure()
            try:
                try:
                    conn.send(data)
                except ConnectionError:
                    # What the server answered before it stopped reading (an
                    # ERR, then close) is the request's outcome; without a
                    # reply, the send error stands.
                    conn.set_timeout(min(self._s.timeout, 1.0))
                    return read(conn)
                return read(conn)
            except ConnectionError as e:
                conn.close()
                if not safe:
                    raise UnknownOutcome(command, e) from e
                if not self._s.reconnect or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, self._s.backoff_max)
            except ServerError as e:
                if isinstance(e, TooBig) or isinstance(e, Busy):
                    conn.close()  # the server closes after these
                raise
            except ProtocolError:
                conn.close()
                raise

    @staticmethod
    def _reply(conn: _Conn, keyword: str = "OK") -> List[str]:
        line = conn.read_line()
        if line.startswith("ERR "):
            raise error_from_line(line)
        parts = line.split(" ")
        if parts[0] != keyword:
            raise ProtocolError("expected %s, got %r" % (keyword, line))
        return parts[1:]

    def _ok_id(self, command: str, line: bytes, payload: Optional[bytes] = None,
               keyed: bool = False) -> int:
        data = line if payload is None else line + payload + b"\r\n"

        def read(conn: _Conn) -> int:
            parts = self._reply(conn)
            if not parts:
                raise ProtocolError("%s: OK without an event id" % command)
            # `OK <id> dup`: a field at the end of the line (PROTOCOL.md).
            return PubId(_ints(parts[:1], " ".join(parts))[0], parts[1:2] == ["dup"])
        # A keyed publish is safe to send again: the server writes its key once.
        return self._request(command, data, read, safe=keyed)

    def _listing(self, command: str, line: bytes, head: str, item: str) -> List[List[str]]:
        def read(conn: _Conn) -> List[List[str]]:
            parts = self._reply(conn, head)
            count = _ints(parts[:1], head)[0] if parts else 0
            rows = []
            for _ in range(count):
                ln = conn.read_line()
                p = ln.split(" ")
                if p[0] != item:
                    raise ProtocolError("expected %s, got %r" % (item, ln))
                rows.append(p[1:])
            return rows
        return self._request(command, line, read, safe=True)

    # --- commands

    def ping(self) -> None:
        """PING; raises if the server does not answer PONG."""
        self._request("PING", b"PING\r\n", lambda c: self._reply(c, "PONG"), safe=True)

    def command(self, *tokens: str) -> str:
        """Sends one raw command line (no payload) and returns its first reply
        line; raises the mapped ServerError on ``ERR``. For commands this module
        has no method for yet; never retried (it may be a write)."""
        line = _line(*[t.encode("ascii") for t in tokens])

        def read(conn: _Conn) -> str:
            ln = conn.read_line()
            if ln.startswith("ERR "):
                raise error_from_line(ln)
            return ln
        return self._request(tokens[0].upper() if tokens else "", line, read, safe=False)

    def create(self, topic: str, life_ms: int = 0) -> int:
        """CREATE: a topic, living ``life_ms`` milliseconds (0: until DELETE;
        otherwise at least 1000). Returns the event id. Raises Exists."""
        _uint(life_ms, "life_ms")
        if 0 < life_ms < 1000:
            raise InvalidArgument("life_ms must be 0 or at least 1000")
        toks = [b"CREATE", _name(topic)] + ([_uint(life_ms, "life_ms")] if life_ms else [])
        return self._ok_id("CREATE", _line(*toks))

    def delete(self, topic: str) -> int:
        """DELETE: removes the topic, its messages, pending delayed messages and
        groups; its subscribers get ``END deleted``. Returns the event id."""
        return self._ok_id("DELETE", _line(b"DELETE", _name(topic)))

    def publish(self, topic: str, payload: Payload, headers: Headers = None, *,
                key: Any = None) -> int:
        """PUB: appends one message; returns its event id (a :class:`PubId`).
        ``headers`` is a dict (or pairs) of ``key=value`` strings stored and
        delivered verbatim. ``key``: a dedup key (sent as ``msgid=<key>``): a
        repeat within the server's window writes nothing and returns the first
        id with ``.dup`` True; a keyed publish is re-sent after a disconnect."""
        data = _payload(payload)
        hdrs = _keyed(headers, key)
        line = _line(b"PUB", _name(topic), str(len(data)).encode(), *hdrs)
        return self._ok_id("PUB", line, data, keyed=_has_key(hdrs))

    def publish_delayed(self, topic: str, payload: Payload, delay_ms: int, headers: Headers = None,
                        *, key: Any = None) -> int:
        """DPUB: the message reaches the topic ``delay_ms`` (>= 1) later, under a
        new event id. Returns the event id of the DPUB record itself (a
        :class:`PubId`; ``key`` as for :meth:`publish`)."""
        _uint(delay_ms, "delay_ms")
        if delay_ms < 1:
            raise InvalidArgument("delay_ms must be at least 1")
        data = _payload(payload)
        hdrs = _keyed(headers, key)
        line = _line(b"DPUB", _name(topic), str(delay_ms).encode(), str(len(data)).encode(),
                     *hdrs)
        return self._ok_id("DPUB", line, data, keyed=_has_key(hdrs))

    @staticmethod
    def _mpub(topic: bytes, messages: Sequence[Tuple[bytes, List[bytes]]]) -> bytes:
        parts = [_line(b"MPUB", topic, str(len(messages)).encode())]
        for data, hdrs in messages:
            parts.append(_line(str(len(data)).encode(), *hdrs))
            parts.append(data)
            parts.append(b"\r\n")
        return b"".join(parts)

    @staticmethod
    def _prepare(messages: Iterable[Any]) -> List[Tuple[bytes, List[bytes]]]:
        out = []
        for m in messages:
            key = None
            if isinstance(m, tuple):
                data, hdrs = (m[0], m[1] if len(m) > 1 else None)
                key = m[2] if len(m) > 2 else None
            else:
                data, hdrs = m, None
            out.append((_payload(data), _keyed(hdrs, key)))
        return out

    @staticmethod
    def _read_range(conn: _Conn) -> List[int]:
        parts = Client._reply(conn)
        if len(parts) < 2:
            raise ProtocolError("MPUB: OK without first and last ids")
        first, last = _ints(parts[:2], " ".join(parts))
        ids = IdList(range(first, last + 1))
        ids.dup = parts[2:3] == ["dup"]
        return ids

    def publish_batch(self, topic: str, messages: Iterable[Any]) -> List[int]:
        """MPUB: writes all ``messages`` atomically, with consecutive event ids,
        or none. Each message is a payload, a ``(payload, headers)`` pair or a
        ``(payload, headers, key)`` triple (a dedup key per message). Returns
        the ids in order (an :class:`IdList`; ``.dup`` when the MPUB repeated
        an earlier keyed one). When every message is keyed, the MPUB is
        re-sent after a disconnect. At most ``limits.maxBatch`` messages
        (default 1000) and ``limits.maxBatchBytes`` payload bytes (default 32 MiB)."""
        prepared = self._prepare(messages)
        if not prepared:
            return []
        data = self._mpub(_name(topic), prepared)
        keyed = all(_has_key(h) for _, h in prepared)
        return self._request("MPUB", data, self._read_range, safe=keyed)

    def publish_many(self, topic: str, messages: Iterable[Any], *, chunk_count: int = 1000,
                     chunk_bytes: int = 4 << 20, window: int = 16) -> List[int]:
        """Publishes many messages fast: MPUB chunks of at most ``chunk_count``
        messages and about ``chunk_bytes`` payload bytes (keep both within the
        server's ``limits.maxBatch`` and ``limits.maxBatchBytes``), up to
        ``window`` chunks in flight on the connection (pipelined). Returns the
        event ids in input order. Each chunk is atomic; the whole is not: if a
        chunk fails with ``ERR``, the exception (raised after the replies of
        the chunks in flight are read) has ``.done_ids``, the ids of the chunks
        written, in order, and ``.failed_index``, the input index of the first
        message of the failed chunk. If the connection breaks, UnknownOutcome
        (with ``.done_ids``) is raised: the chunks after those are unknown —
        unless every message has a dedup key (``(payload, headers, key)``):
        then the unanswered chunks are re-sent on a new connection (within
        ``reconnect_timeout``), which the keys make safe. Chunk boundaries
        depend only on the input, so a re-sent chunk repeats its MPUB exactly."""
        if chunk_count < 1 or chunk_bytes < 1 or window < 1:
            raise InvalidArgument("chunk_count, chunk_bytes and window must be at least 1")
        t = _name(topic)
        prepared = self._prepare(messages)
        chunks, cur, size = [], [], 0  # type: List[List[Tuple[bytes, List[bytes]]]], list, int
        for m in prepared:
            if cur and (len(cur) >= chunk_count or size + len(m[0]) > chunk_bytes):
                chunks.append(cur)
                cur, size = [], 0
            cur.append(m)
            size += len(m[0])
        if cur:
            chunks.append(cur)
        starts, n = [], 0  # input index of each chunk's first message
        for c in chunks:
            starts.append(n)
            n += len(c)
        ids = []  # type: List[int]
        # Chunks answered (OK or ERR), and the first ERR with its input index.
        st = {"done": 0, "error": None, "failed_index": 0}  # type: Dict[str, Any]
        keyed = all(_has_key(h) for _, h in prepared)
        deadline = time.monotonic() + self._s.reconnect_timeout
        delay = self._s.backoff_initial
        while True:
            try:
                self._many(t, chunks, starts, window, ids, st)
                break
            except ConnectionError as e:
                if not keyed or not self._s.reconnect or time.monotonic() >= deadline:
                    raise UnknownOutcome("MPUB", e, ids) from e
                # Every message is keyed: send the unanswered chunks again on
                # a new connection. One the server did write answers its ids
                # again with `dup`, so none is written twice.
                time.sleep(delay)
                delay = min(delay * 2, self._s.backoff_max)
        if st["error"] is not None:
            err = st["error"]
            err.done_ids = ids
            err.failed_index = st["failed_index"]
            raise err
        return ids

    def _many(self, t: bytes, chunks: List[List[Tuple[bytes, List[bytes]]]], starts: List[int],
              window: int, ids: List[int], st: Dict[str, Any]) -> None:
        """publish_many's pipeline over one connection, from chunk
        ``st["done"]`` on: appends the ids answered to ``ids``, counts the
        chunks answered in ``st``. Raises ConnectionError when the connection
        breaks (the caller decides whether the rest may be sent again)."""
        conn = self._ensure()
        sent = done = st["done"]  # chunks sent; chunks whose reply was read
        try:
            while done < len(chunks):
                # Keep up to `window` chunks in flight: replies come back in
                # request order, and a queued chunk costs the server nothing
                # until it reads it.
                while sent < len(chunks) and sent - done < window:
                    try:
                        conn.send(self._mpub(t, chunks[sent]))
                    except ConnectionError:
                        break  # read what was answered; the rest is unknown
                    sent += 1
                if done >= sent:
                    raise ConnectionError("the connection broke before chunk %d was sent" % done)
                try:
                    ids.extend(self._read_range(conn))
                except ServerError as e:
                    if st["error"] is None:
                        st["error"], st["failed_index"] = e, starts[done]
                    if isinstance(e, TooBig):
                        # The server closed after it: no later chunk was read.
                        conn.close()
                        st["done"] = len(chunks)
                        return
                done += 1
                st["done"] = done
        except ConnectionError:
            conn.close()
            raise

    def info(self, topic: str) -> TopicInfo:
        """INFO: the topic's figures. Raises NoTopic."""
        def read(conn: _Conn) -> TopicInfo:
            return self._topic(self._reply(conn, "TOPIC"))
        return self._request("INFO", _line(b"INFO", _name(topic)), read, safe=True)

    @staticmethod
    def _topic(p: List[str]) -> TopicInfo:
        if len(p) < 6:
            raise ProtocolError("short TOPIC line: %r" % p)
        return TopicInfo(p[0], *_ints(p[1:6], " ".join(p)))

    def list(self) -> List[TopicInfo]:
        """LIST: every topic, ordered by name."""
        return [self._topic(p) for p in self._listing("LIST", b"LIST\r\n", "TOPICS", "TOPIC")]

    def groups(self, topic: str) -> List[GroupInfo]:
        """GROUPS: the topic's consumer groups. Raises NoTopic."""
        rows = self._listing("GROUPS", _line(b"GROUPS", _name(topic)), "GROUPS", "GROUP")
        out = []
        for p in rows:
            if len(p) < 5:
                raise ProtocolError("short GROUP line: %r" % p)
            n = _ints(p[1:5], " ".join(p))
            shared = None
            if len(p) >= 8 and p[5] == "shared":
                m = _ints(p[6:8], " ".join(p))
                shared = (m[0], m[1])
            out.append(GroupInfo(p[0], n[0], n[1] == 1, n[2], n[3], shared))
        return out

    def group_delete(self, topic: str, group: str) -> int:
        """GROUPDEL: removes the group; its subscribers get ``END deleted``.
        Returns the event id. Raises NoTopic, or BadRequest for no such group."""
        return self._ok_id("GROUPDEL", _line(b"GROUPDEL", _name(topic), _name(group, "group")))

    def stats(self) -> Dict[str, Union[int, str]]:
        """STATS: name -> value (int when the value is a number; `history`,
        16 hex digits, stays a string)."""
        out = {}  # type: Dict[str, Union[int, str]]
        for p in self._listing("STATS", b"STATS\r\n", "STATS", "STAT"):
            if len(p) < 2:
                raise ProtocolError("short STAT line: %r" % p)
            v = " ".join(p[1:])
            out[p[0]] = int(v) if v.isdigit() and p[0] != "history" else v
        return out

    def slaves(self) -> List[SlaveInfo]:
        """SLAVES: the slaves connected to this master (none on a slave)."""
        out = []
        for p in self._listing("SLAVES", b"SLAVES\r\n", "SLAVES", "SLAVE"):
            if len(p) < 5:
                raise ProtocolError("short SLAVE line: %r" % p)
            n = _ints(p[1:4], " ".join(p))
            out.append(SlaveInfo(p[0], n[0], n[1], n[2], p[4]))
        return out

    def role(self) -> RoleInfo:
        """ROLE: role, epoch, history id and last event id."""
        def read(conn: _Conn) -> RoleInfo:
            p = self._reply(conn, "ROLE")
            if len(p) < 4:
                raise ProtocolError("short ROLE line: %r" % p)
            return RoleInfo(p[0], _ints(p[1:2], p[1])[0], p[2], _ints(p[3:4], p[3])[0])
        return self._request("ROLE", b"ROLE\r\n", read, safe=True)

    def promote(self) -> int:
        """PROMOTE (on a slave): makes it a master of a new epoch; returns the
        event id the epoch starts at. A master raises BadRequest."""
        return self._ok_id("PROMOTE", b"PROMOTE\r\n")

    def subscribe(self, topic: str, start: Union[int, str, None] = None, *, batch: Optional[int] = None,
                  ack_ms: Optional[int] = None, group: Optional[str] = None,
                  max_deliver: Optional[int] = None, dlq: Optional[str] = None,
                  mode: Optional[str] = None,
                  liveness: float = 75.0, reconnect: Optional[bool] = None,
                  on_standby: Optional[Callable[["Subscription"], None]] = None,
                  on_active: Optional[Callable[["Subscription"], None]] = None) -> "Subscription":
        """SUB on a connection of its own; returns a :class:`Subscription`
        (iterate it for batches). ``start``: 0, an event id, ``"$"``, or
        ``"-"`` with a group (the default: ``"-"`` with a group, 0 without).
        ``batch``, ``ack_ms`` (the server's ACK deadline), ``group``,
        ``max_deliver``, ``dlq`` and ``mode`` (``"exclusive"``, the server's
        default, or ``"shared"``: a worker pool, see :func:`run_workers`)
        are the SUB options; ``liveness`` is the
        silence in seconds after which the connection counts as dead. The SUB
        is sent (and its errors, such as NoTopic, raised) here."""
        if start is None:
            start = "-" if group is not None else 0
        sub = Subscription(self, topic, start, batch=batch, ack_ms=ack_ms, group=group,
                           max_deliver=max_deliver, dlq=dlq, mode=mode, liveness=liveness,
                           reconnect=self._s.reconnect if reconnect is None else reconnect,
                           on_standby=on_standby, on_active=on_active)
        sub._open(first=True)
        return sub


# ---------------------------------------------------------- subscriptions

class Batch(list):
    """The messages of one ``BATCH``, a list of :class:`Message`. Call
    :meth:`ack` once they are processed."""

    def __init__(self, sub: "Subscription", messages: List[Message]):
        super().__init__(messages)
        self._sub = sub
        self.acked = False

    @property
    def last_id(self) -> int:
        """The event id of the batch's last message."""
        return self[-1].event_id

    def ack(self) -> None:
        """ACK: the server sends the next batch; with a group, the batch's last
        event id becomes the group's committed position. Idempotent."""
        self._sub._ack(self)


class Subscription:
    """A running SUB. Iterate it for :class:`Batch` objects; see the module's
    documentation, "Subscriptions". Attributes: ``standby`` (True while a
    group subscriber waits to take over), ``end_reason`` (``"deleted"``,
    ``"expired"``, ``"stopped"``, or None while it runs), ``last_acked_id``,
    ``reconnects``."""

    def __init__(self, client: Client, topic: str, start: Union[int, str], *, batch: Optional[int],
                 ack_ms: Optional[int], group: Optional[str], max_deliver: Optional[int],
                 dlq: Optional[str], mode: Optional[str], liveness: float, reconnect: bool,
                 on_standby: Optional[Callable[["Subscription"], None]],
                 on_active: Optional[Callable[["Subscription"], None]]):
        self._client = client
        self._s = client._s
        self.topic = topic
        self.group = group
        opts = []
        if batch is not None:
            opts.append(b"batch=" + _uint(batch, "batch"))
            if batch < 1:
                raise InvalidArgument("batch must be at least 1")
        if ack_ms is not None:
            opts.append(b"ack=" + _uint(ack_ms, "ack_ms"))
            if ack_ms < 1:
                raise InvalidArgument("ack_ms must be at least 1")
        if group is not None:
            opts.append(b"group=" + _name(group, "group"))
        elif max_deliver is not None or dlq is not None or mode is not None or start == "-":
            raise InvalidArgument("max_deliver, dlq, mode and start '-' need a group")
        if mode is not None:
            if mode not in ("exclusive", "shared"):
                raise InvalidArgument("mode must be 'exclusive' or 'shared', not %r" % (mode,))
            opts.append(b"mode=" + mode.encode())
        if max_deliver is not None:
            opts.append(b"maxDeliver=" + _uint(max_deliver, "max_deliver"))
        if dlq is not None:
            opts.append(b"dlq=" + _name(dlq, "dlq topic"))
        self._topic = _name(topic)
        self._opts = opts
        if isinstance(start, str) and start in ("$", "-"):
            self._start = start.encode()
        else:
            self._start = _uint(start, "start")  # type: ignore[arg-type]
        self._liveness = liveness
        self._reconnect = reconnect
        self._on_standby = on_standby
        self._on_active = on_active
        self._conn = None  # type: Optional[_Conn]
        self._pending = None  # type: Optional[Batch]
        self._stopping = False
        self._reading = False
        self._lock = threading.Lock()
        self.standby = False
        self.end_reason = None  # type: Optional[str]
        self.last_acked_id = None  # type: Optional[int]
        self.reconnects = 0

    # --- opening

    def _sub_line(self, first: bool) -> bytes:
        if self.group is not None:
            after = self._start if first else b"-"
        elif self.last_acked_id is not None:
            after = str(self.last_acked_id).encode()
        else:
            after = self._start
        return _line(b"SUB", self._topic, after, *self._opts)

    def _open(self, first: bool) -> None:
        """Connects and sends SUB; reconnects within ``reconnect_timeout`` when
        not the first time (the first time, errors go to the caller)."""
        if first and self.group is None and self._start == b"$":
            # A reconnect must resume exactly after the last id seen: give
            # "$" a number now, so messages written while it was away are not
            # skipped.
            self._start = str(self._client.info(self.topic).last_id).encode()
        deadline = time.monotonic() + (self._s.reconnect_timeout if self._reconnect else 0)
        delay = self._s.backoff_initial
        while True:
            conn = None
            try:
                conn = _connect_with_backoff(self._s, deadline)
                conn.set_timeout(self._s.timeout)
                conn.send(self._sub_line(first))
                Client._reply(conn)
                conn.set_timeout(self._liveness)
                self._conn = conn
                return
            except ConnectionError:
                if conn is not None:
                    conn.close()
                if first or not self._reconnect or time.monotonic() >= deadline:
                    raise
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, self._s.backoff_max)
            except BaseException:
                if conn is not None:
                    conn.close()
                raise

    # --- iteration

    def __iter__(self) -> "Subscription":
        return self

    def __next__(self) -> Batch:
        with self._lock:
            if self._stopping or self.end_reason is not None:
                raise StopIteration
            self._reading = True
        try:
            return self._next()
        finally:
            self._reading = False

    def _next(self) -> Batch:
        if self._pending is not None and not self._pending.acked:
            self._ack(self._pending)
        while True:
            conn = self._conn
            if conn is None:
                raise StopIteration
            try:
                got = self._read_event(conn)
            except ConnectionError:
                conn.close()
                self._conn = None
                if self._stopping or not self._reconnect:
                    if self._stopping:
                        self.end_reason = "stopped"
                        raise StopIteration from None
                    raise
                self._pending = None
                self.reconnects += 1
                self._open(first=False)
                continue
            if got is None:
                continue
            if isinstance(got, Batch):
                self._pending = got
                return got
            self.end_reason = got
            self._finish()
            raise StopIteration

    def _read_event(self, conn: _Conn) -> Union[Batch, str, None]:
        """One server event: a Batch, an end reason, or None (ALIVE, STANDBY)."""
        line = conn.read_line()
        parts = line.split(" ")
        kind = parts[0]
        if kind == "BATCH":
            count = _ints(parts[1:2], line)[0] if len(parts) > 1 else 0
            msgs = []
            for _ in range(count):
                ml = conn.read_line()
                p = ml.split(" ")
                if p[0] != "MSG" or len(p) < 4:
                    raise ProtocolError("expected MSG, got %r" % ml)
                eid, ts, n = _ints(p[1:4], ml)
                msgs.append(Message(eid, ts, _parse_headers(p[4:]), conn.read_exact(n)))
            if self.standby:
                self.standby = False
                if self._on_active is not None:
                    self._on_active(self)
            return Batch(self, msgs)
        if kind == "ALIVE":
            return None
        if kind == "STANDBY":
            self.standby = True
            if self._on_standby is not None:
                self._on_standby(self)
            return None
        if kind == "END":
            return parts[1] if len(parts) > 1 else "ended"
        if kind == "OK" and self._stopping:
            return "stopped"
        if kind == "ERR":
            err = error_from_line(line)
            self.end_reason = "error"
            self._finish()
            raise err
        raise ProtocolError("unexpected line in a subscription: %r" % line)

    def _ack(self, batch: Batch) -> None:
        if batch.acked:
            return
        if batch is not self._pending:
            raise SmssError("only the latest batch can be acknowledged")
        batch.acked = True
        conn = self._conn
        if conn is None or self.end_reason is not None:
            return
        try:
            conn.send(b"ACK\r\n")
        except ConnectionError:
            # The next read sees the broken connection and resubscribes; the
            # batch comes again (it was not acknowledged for the server).
            return
        self.last_acked_id = batch.last_id

    # --- ending

    def stop(self, timeout: Optional[float] = None) -> None:
        """Ends the subscription with STOP (nothing more is committed; an
        unacknowledged batch is delivered again later) and closes its
        connection. Safe to call from another thread while one iterates: the
        iteration then ends with ``end_reason == "stopped"``."""
        with self._lock:
            if self._stopping or self.end_reason is not None:
                return
            self._stopping = True
            reader_active = self._reading
        conn = self._conn
        if conn is None:
            self.end_reason = self.end_reason or "stopped"
            return
        try:
            conn.send(b"STOP\r\n")
        except ConnectionError:
            pass
        if reader_active:
            return  # the iterating thread reads the OK and ends the iteration
        self._drain_stop(conn, timeout if timeout is not None else self._s.timeout)

    def _drain_stop(self, conn: _Conn, timeout: float) -> None:
        """Reads up to the OK that answers STOP (skipping ALIVE and a batch the
        server sent before it read STOP), bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not conn.closed:
                conn.set_timeout(max(0.01, deadline - time.monotonic()))
                got = self._read_event(conn)
                if isinstance(got, str):
                    break
        except SmssError:
            pass
        self.end_reason = self.end_reason or "stopped"
        self._finish()

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                conn.set_timeout(1.0)
                conn.send(b"QUIT\r\n")
            except SmssError:
                pass
            conn.close()

    def close(self) -> None:
        """Drops the connection without STOP, as a crash would: for a group,
        an unacknowledged batch counts as a failed delivery."""
        self.end_reason = self.end_reason or "closed"
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------- worker pools

class WorkerPool:
    """Worker threads sharing one consumer group in shared mode, started by
    :func:`run_workers`. :meth:`stop` ends them (a batch a worker holds
    unacknowledged goes to the group again); :meth:`join` waits for them.
    ``errors`` lists what handlers raised (the latest 100)."""

    def __init__(self, address: str, topic: str, group: str, handler: Callable[[Message], Any],
                 workers: int, sub_kw: Dict[str, Any], client_kw: Dict[str, Any]):
        if workers < 1:
            raise InvalidArgument("workers must be at least 1")
        self.errors = []  # type: List[BaseException]
        self._address = address
        self._topic = topic
        self._group = group
        self._handler = handler
        self._sub_kw = sub_kw
        self._client_kw = client_kw
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._subs = {}  # type: Dict[int, Subscription]
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True,
                                          name="smss-worker-%d" % i) for i in range(workers)]
        for t in self._threads:
            t.start()

    def _work(self, i: int) -> None:
        while not self._stopping.is_set():
            try:
                with Client(self._address, **self._client_kw) as c:
                    sub = c.subscribe(self._topic, group=self._group, mode="shared", **self._sub_kw)
                    with self._lock:
                        self._subs[i] = sub
                    if self._stopping.is_set():
                        sub.stop()
                    for b in sub:
                        try:
                            for m in b:
                                self._handler(m)
                        except Exception as e:  # a handler's failure: the batch goes again
                            self._note(e)
                            sub.close()  # no ACK: counted as a failed delivery
                            break
                        b.ack()
                    else:
                        if sub.end_reason in ("deleted", "expired"):
                            return  # the topic or the group is gone
            except (SmssError, ConnectionError) as e:
                self._note(e)
                # Wait before trying again, unless stopping.
                self._stopping.wait(0.5)

    def _note(self, e: BaseException) -> None:
        with self._lock:
            self.errors.append(e)
            del self.errors[:-100]

    def stop(self, timeout: Optional[float] = None) -> None:
        """Ends every worker (STOP on each subscription) and waits for them."""
        self._stopping.set()
        with self._lock:
            subs = list(self._subs.values())
        for sub in subs:
            try:
                sub.stop()
            except (SmssError, ConnectionError):
                pass  # its connection is gone already: nothing to stop
        self.join(timeout)

    def join(self, timeout: Optional[float] = None) -> None:
        """Waits until every worker has ended (``timeout`` seconds in all)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


def run_workers(address: str, topic: str, group: str, handler: Callable[[Message], Any], *,
                workers: int = 4, batch: Optional[int] = None, ack_ms: Optional[int] = None,
                max_deliver: Optional[int] = None, dlq: Optional[str] = None,
                **client_kw: Any) -> WorkerPool:
    """A worker pool: ``workers`` threads, each with a client of its own
    (``client_kw`` go to :class:`Client`, e.g. ``token=``) and a member of
    ``group`` on ``topic`` in shared mode, call ``handler(message)`` for
    every message and acknowledge each batch once the handler returned for
    all of it. Members get batches at the same time; there is no order
    across them (use an exclusive group for order). A handler that raises
    leaves its batch unacknowledged: the worker drops its connection (a
    failed delivery, towards ``max_deliver``), the batch goes to a member
    again, and the worker subscribes anew. Workers end when the topic or
    group is deleted, or on :meth:`WorkerPool.stop`. Threads suit handlers
    that wait (I/O); for CPU-bound work run one pool per process."""
    sub_kw = {"batch": batch, "ack_ms": ack_ms, "max_deliver": max_deliver, "dlq": dlq}
    return WorkerPool(address, topic, group, handler, workers, sub_kw, client_kw)
