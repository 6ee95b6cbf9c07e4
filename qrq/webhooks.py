"""Webhooks: a POST of a job's final record to the URL its owner gave, signed.

A job submitted with a ``callback_url`` (or by a user with a default one) gets a
row in ``webhook_target``, written before the job is enqueued. When the job ends
the queue calls its end hooks, and :func:`enqueue_delivery` (registered when this
module is imported: by the web app and by ``tasks/webhook.py`` in the consumer)
submits a ``webhook.deliver`` job by name that delivers the record: a job of its
own, retried with backoff, listed like any other, that never changes the job it
reports on.

Signing: ``X-Qrq-Timestamp`` is the Unix time of the attempt and
``X-Qrq-Signature`` is ``v1=`` + hex HMAC-SHA256 over ``"<timestamp>." + body``
with the owner's webhook secret (``GET /api/me/webhook``), or the server's for a
job without an owner.

Server-side request forgery: a URL whose host resolves to a private, loopback,
link-local or otherwise non-global address is refused at submit time and again
at each delivery (after DNS resolution, connecting only to the address checked),
unless ``QRQ_WEBHOOK_ALLOW_PRIVATE`` is on. Redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import time
from typing import Any
from urllib.parse import SplitResult, urlsplit

from qrq.errors import QrqError
from qrq.queue import huey, jobs, submit

MAX_URL_CHARS = 2000
TIMEOUT_SECONDS = 10.0
USER_AGENT = "qrq-webhook/1"
# The registered name of the delivery task (declared in qrq/queue/catalog.py).
DELIVERY_TASK = "webhook.deliver"


class WebhookRefused(QrqError):
    """The callback URL is not allowed (a private address, a bad scheme...)."""

    status = 422
    code = "validation_error"


class DeliveryFailed(Exception):
    """The receiver did not accept the delivery (an error status or no answer): retried."""


# -- secrets and signatures ----------------------------------------------------------------

def server_secret(settings) -> bytes:
    """``QRQ_WEBHOOK_SECRET``, or a key derived from the secret key (never the key itself)."""
    if settings.webhook_secret:
        return settings.webhook_secret.encode()
    return hmac.new(settings.secret_key.encode(), b"qrq-webhook", hashlib.sha256).digest()


def user_secret(storage, settings, owner_id: int | None) -> str:
    """The webhook secret of *owner_id* (None: the server's), as text a receiver keeps:
    derived from the server's secret and, once the user replaced it, how many times."""
    if owner_id is None:
        label = "qrq-webhook-server"
    else:
        rows = storage.sql("select generation from webhook_secret where owner_id = ?",
                           (owner_id,), results=True)
        label = f"qrq-webhook-user:{owner_id}" + (f":{rows[0][0]}" if rows else "")
    return hmac.new(server_secret(settings), label.encode(), hashlib.sha256).hexdigest()


def replace_secret(storage, owner_id: int) -> None:
    """Give *owner_id* a new webhook secret: deliveries from now on, queued ones too, are
    signed with it, and the old one signs nothing more."""
    storage.sql("insert into webhook_secret (owner_id, generation, rotated_at) "
                "values (?, 1, ?) on conflict (owner_id) do update set "
                "generation = webhook_secret.generation + 1, rotated_at = excluded.rotated_at",
                (owner_id, time.time()), commit=True)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Qrq-Signature`` value of *body* sent at *timestamp*."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


# -- addresses -----------------------------------------------------------------------------

def check_url(url: Any, allow_private: bool, field: str = "callback_url"
              ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses *url*'s host resolves to, all allowed; else :class:`WebhookRefused`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise WebhookRefused(f"must be an http(s) URL of at most {MAX_URL_CHARS} characters",
                             field=field)
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" or a host that NFKC changes
        raise WebhookRefused("is not a valid URL", field=field) from None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookRefused("has an invalid port", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("must be an http or https URL with a host", field=field)
    if not _sendable(url, parts):
        raise WebhookRefused("must not contain spaces or control characters, and its path "
                             "and query must be ASCII (percent-encode the rest, e.g. %20)",
                             field=field)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"host {parts.hostname} does not resolve", field=field) from None
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not allow_private and not _public(address):
            raise WebhookRefused(f"{parts.hostname} is a private, loopback, link-local or "
                                 f"other non-public address ({address}); set "
                                 "QRQ_WEBHOOK_ALLOW_PRIVATE=true "
                                 "to allow it", field=field)
        addresses.append(address)
    return addresses


def _sendable(url: str, parts: SplitResult) -> bool:
    # http.client sends the path and query as given: it refuses a space or a control
    # character, and cannot encode a non-ASCII one (an IDN host is fine: DNS and the Host
    # header encode it). urlsplit drops tabs and newlines, so the whole URL is checked.
    return (not any(ch <= " " or ch == "\x7f" for ch in url)
            and (parts.path + parts.query + parts.fragment).isascii())


# IPv6 prefixes that carry an IPv4 address in their last 32 bits, which ipaddress does
# not unwrap: IPv4-compatible (::/96), IPv4-translated (::ffff:0:0:0/96), NAT64's
# well-known prefix. The address reached is the IPv4 one, so that is what is checked.
_IPV4_IN_LAST_32 = tuple(map(ipaddress.ip_network,
                             ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")))
# Special-use ranges that Python 3.11's is_global calls global: local-use NAT64 (RFC
# 8215: translated inside a network), the IETF protocol assignments (192.0.0.0/24, bar
# the two anycast relays there: RFC 7723, 8155) and the 6to4 relay anycast (RFC 7526,
# deprecated), which lead to whatever a network put there.
_NOT_PUBLIC = tuple(map(ipaddress.ip_network, ("64:ff9b:1::/48", "192.0.0.0/24",
                                                "192.88.99.0/24")))
_PUBLIC_IN_NOT_PUBLIC = tuple(map(ipaddress.ip_address, ("192.0.0.9", "192.0.0.10")))


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether *address*, and any IPv4 address it carries (IPv4-mapped, -compatible or
    -translated, 6to4, Teredo, NAT64), is a public unicast one."""
    return all(a.is_global and not a.is_multicast and (
               a in _PUBLIC_IN_NOT_PUBLIC or not any(a in net for net in _NOT_PUBLIC
                                                     if net.version == a.version))
               for a in (address, *_embedded_ipv4(address)))


def _embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address
                   ) -> list[ipaddress.IPv4Address]:
    if address.version == 4:
        return []
    inner = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if any(address in network for network in _IPV4_IN_LAST_32):
        inner.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in inner if a is not None]


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address that was checked, whatever DNS says a moment later."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = str(address)

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = str(address)

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def deliver(url: str, body: bytes, secret: str, *, allow_private: bool,
            delivery_id: str = "", timeout: float = TIMEOUT_SECONDS) -> int:
    """POST *body* (JSON) to *url*, signed; return the receiver's status (2xx).

    :raises WebhookRefused: the URL is not allowed now (not retried).
    :raises DeliveryFailed: any other status, or no answer (retried).
    """
    address = check_url(url, allow_private)[0]
    parts = urlsplit(url)
    https = parts.scheme == "https"
    connection_class = _PinnedHTTPS if https else _PinnedHTTP
    conn = connection_class(parts.hostname, parts.port or (443 if https else 80), address,
                            timeout)
    timestamp = int(time.time())
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Qrq-Timestamp": str(timestamp),
               "X-Qrq-Signature": sign(secret, timestamp, body),
               "X-Qrq-Delivery": delivery_id}
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
    # ValueError: what http.client raises for a path or header it cannot send.
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    if not 200 <= response.status < 300:
        raise DeliveryFailed(f"the receiver answered {response.status}")
    return response.status


# -- targets and defaults (tables in the queue database, see qrq/queue/schema.py) ----------

def set_target(storage, job_id: str, owner_id: int | None, url: str) -> None:
    """Record that *job_id*'s end is to be posted to *url* (before it is enqueued)."""
    storage.sql("insert into webhook_target (job_id, owner_id, url, created_at) "
                "values (?, ?, ?, ?) on conflict (job_id) do update set "
                "owner_id = excluded.owner_id, url = excluded.url, "
                "created_at = excluded.created_at",
                (job_id, owner_id, url, time.time()), commit=True)


def inherit_target(storage, parent_id: str, job_id: str) -> None:
    """Give *job_id* (a re-run of *parent_id*'s work, before it is enqueued) the callback
    of *parent_id*, if it has one: its owner asked to hear how that work ends."""
    target = target_of(storage, parent_id)
    if target is not None:
        set_target(storage, job_id, target["owner_id"], target["url"])


def drop_target(storage, job_id: str) -> None:
    storage.sql("delete from webhook_target where job_id = ?", (job_id,), commit=True)


def target_of(storage, job_id: str) -> dict[str, Any] | None:
    rows = storage.sql("select owner_id, url from webhook_target where job_id = ?",
                       (job_id,), results=True)
    return {"owner_id": rows[0][0], "url": rows[0][1]} if rows else None


def default_url(storage, owner_id: int) -> str | None:
    rows = storage.sql("select url from webhook_default where owner_id = ?", (owner_id,),
                       results=True)
    return rows[0][0] if rows else None


def set_default_url(storage, owner_id: int, url: str | None) -> None:
    """Set (or with None, clear) the callback URL of *owner_id*'s jobs that give none."""
    if url is None:
        storage.sql("delete from webhook_default where owner_id = ?", (owner_id,),
                    commit=True)
    else:
        storage.sql("insert into webhook_default (owner_id, url) values (?, ?) "
                    "on conflict (owner_id) do update set url = excluded.url",
                    (owner_id, url), commit=True)


# -- the end hook ----------------------------------------------------------------------------

@huey.on_job_end
def enqueue_delivery(ended: jobs.EndedJob) -> None:
    """Queue the delivery of an ended job that has a callback URL (not of deliveries).

    The statement that recorded the end said whether the job has a target: a job without
    one (most) costs no query here.
    """
    if not ended.has_callback or ended.type == "webhook":
        return
    target = target_of(huey.storage, ended.id)
    if target is not None:
        submit(DELIVERY_TASK, ended.id, owner_id=target["owner_id"],
               params={"job_id": ended.id, "callback_url": target["url"]})
