"""The azure SDK boundary: the names the adapter uses, imported in one place, and credentials.

azure-servicebus is the optional extra ``amqp1q[azure]``: without it, importing
:mod:`amqp1q.adapters.servicebus` fails here with an ``ImportError`` that names the install
line (``import amqp1q`` itself never needs the SDK). Also the bound on closing SDK objects,
:func:`make_client`, the SDK's client for a parsed connection string or a credential, and
:func:`async_credential`, which fits a caller's azure-core credential to the asyncio client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping
from typing import Any, Final

from ..._errors import InvalidSetting
from ..._urls import ServiceBusEndpoint

try:
    from azure.core.credentials import AccessToken, AzureNamedKeyCredential, AzureSasCredential
    from azure.servicebus import (
        NEXT_AVAILABLE_SESSION,
        ServiceBusMessage,
        ServiceBusMessageBatch,
        ServiceBusReceivedMessage,
        ServiceBusReceiveMode,
        ServiceBusSubQueue,
    )
    from azure.servicebus import exceptions as sb_errors
    from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        'the Azure Service Bus adapter needs azure-servicebus: pip install "amqp1q[azure]"'
    ) from exc

__all__ = [
    "CLOSE_TIMEOUT",
    "NEXT_AVAILABLE_SESSION",
    "ServiceBusClient",
    "ServiceBusMessage",
    "ServiceBusMessageBatch",
    "ServiceBusReceiveMode",
    "ServiceBusReceivedMessage",
    "ServiceBusReceiver",
    "ServiceBusSender",
    "ServiceBusSubQueue",
    "async_credential",
    "close_quietly",
    "make_client",
    "no_reopen",
    "open_once",
    "sb_errors",
    "track_sockets",
]


def make_client(
    endpoint: ServiceBusEndpoint | None,
    *,
    credential: Any,
    namespace: str | None,
    emulator: bool,
    options: Mapping[str, Any],
) -> ServiceBusClient:
    """The SDK's client: from ``endpoint`` (a parsed connection string, rebuilt for the SDK,
    secrets revealed only here), else for ``namespace`` with ``credential`` (plain AMQP to an
    ``emulator``). ``options`` are ``ServiceBusClient`` keywords. The SDK raises ValueError for
    what it refuses."""
    kwargs = dict(options)
    if endpoint is not None:
        host = endpoint.host
        if endpoint.port is not None and endpoint.emulator:
            host = f"{host}:{endpoint.port}"
        parts = [f"Endpoint=sb://{host}/"]
        if endpoint.key_name is not None and endpoint.key is not None:
            parts.append(f"SharedAccessKeyName={endpoint.key_name}")
            parts.append(f"SharedAccessKey={endpoint.key.reveal()}")
        if endpoint.signature is not None:
            parts.append(f"SharedAccessSignature={endpoint.signature.reveal()}")
        if endpoint.emulator:
            parts.append("UseDevelopmentEmulator=true")
        return ServiceBusClient.from_connection_string(";".join(parts), **kwargs)
    if emulator:
        kwargs["use_tls"] = False
    assert namespace is not None
    return ServiceBusClient(namespace, credential, **kwargs)


#: How long closing one SDK object (client, sender, receiver) or a background task may take.
CLOSE_TIMEOUT: Final = 5.0


log = logging.getLogger("amqp1q.servicebus")


def track_sockets(handler: Any) -> None:
    """Note the socket of every connection a fresh SDK sender or receiver opens, for
    :func:`close_quietly`: after a dropped connection the SDK's own close leaves it open (it
    stops at its first failure, and a connection that ended in error skips closing its
    transport), and so does its clean-up of an open that failed half way; each such socket
    stays open until the garbage collector finds it (a ResourceWarning). Call before opening.
    Relies on the private ``_create_handler`` and ``_handler._connection._transport``."""
    transports: list[Any] = []
    handler._amqp1q_transports = transports
    create = getattr(handler, "_create_handler", None)
    if create is None:
        return

    def create_handler(*args: Any, **kwargs: Any) -> None:
        create(*args, **kwargs)
        amqp: Any = getattr(handler, "_handler", None)
        open_async = getattr(amqp, "open_async", None)
        if open_async is None:
            return

        async def opened(*args: Any, **kwargs: Any) -> Any:
            try:
                return await open_async(*args, **kwargs)
            finally:
                transport = getattr(getattr(amqp, "_connection", None), "_transport", None)
                if transport is not None:
                    transports.append(transport)

        amqp.open_async = opened

    handler._create_handler = create_handler


async def close_quietly(handler: Any, *, dead: bool = False) -> None:
    """Close an SDK sender or receiver, bounded, whatever it raises, and every socket it opened
    (see :func:`track_sockets`). ``dead``: its connection failed, so its sockets are closed
    first (the SDK's close otherwise waits seconds for answers that cannot come)."""
    if dead:
        await _close_sockets(handler)
    try:
        await asyncio.wait_for(handler.close(), CLOSE_TIMEOUT)
    except (Exception, asyncio.TimeoutError):
        log.debug("closing a Service Bus sender or receiver failed", exc_info=True)
    await _close_sockets(handler)


async def _close_sockets(handler: Any) -> None:
    for transport in getattr(handler, "_amqp1q_transports", ()):
        if getattr(transport, "writer", None) is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(transport.close(), CLOSE_TIMEOUT)


def no_reopen(handler: Any) -> None:
    """Keep an opened SDK sender or receiver from opening itself again once its handler shut
    down: its operations then fail at once, and amqp1q opens a fresh object instead.

    The SDK reopens a failed handler inside whichever operation comes next; with several
    operations on one receiver at once (acks, renewals, the pump), each failing one opens a
    connection of its own and they overwrite each other's, so all but one are never closed
    (hundreds of leaked connections, each with a keep-alive task, in 50 cuts). Relies on the
    private ``_open`` and ``_running`` (see the package docstring)."""
    if not hasattr(handler, "_open") or not hasattr(handler, "_running"):
        return  # another SDK version: it reopens itself, as it always did

    async def _open(timeout: float | None = None) -> None:
        if not handler._running:
            raise sb_errors.ServiceBusConnectionError(
                message="the connection was lost; amqp1q opens a new sender or receiver"
            )

    handler._open = _open


async def open_once(handler: Any) -> None:
    """Open an SDK sender or receiver in one attempt, without the SDK's retries.

    The SDK retries every failure to open -- a refused port, an unknown host, a TLS failure,
    refused credentials -- backing off each time, so the cause was lost behind the connect
    timeout (10 s of nothing). One attempt fails in milliseconds with the cause attached. The
    SDK's retries still apply to everything after (sends, receives, settlements) when the
    adapter has no reconnect policy; with one they are off, and amqp1q re-dials itself.
    azure-servicebus 7.15 reads ``handler._config.retry_total`` as each operation starts;
    without that attribute the SDK's own retries apply.
    """
    config = getattr(handler, "_config", None)
    retries = getattr(config, "retry_total", None)
    if not isinstance(retries, int):
        await handler.__aenter__()
        return
    config.retry_total = 0  # type: ignore[union-attr]
    try:
        await handler.__aenter__()
    finally:
        config.retry_total = retries  # type: ignore[union-attr]


class _AsyncToken:
    """A synchronous azure-core ``TokenCredential`` for the asyncio client: ``get_token`` runs in
    a worker thread (a token fetch may block on HTTP)."""

    def __init__(self, credential: Any) -> None:
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        call = functools.partial(self._credential.get_token, *scopes, **kwargs)
        token: AccessToken = await asyncio.to_thread(call)
        return token

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> _AsyncToken:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


def async_credential(credential: Any) -> Any:
    if isinstance(credential, (AzureNamedKeyCredential, AzureSasCredential)):
        return credential
    get_token = getattr(credential, "get_token", None)
    if get_token is None:
        raise InvalidSetting(
            "credential must be an azure-core TokenCredential or AsyncTokenCredential "
            f"(with get_token), an AzureNamedKeyCredential or an AzureSasCredential, "
            f"not {type(credential).__name__}"
        )
    if asyncio.iscoroutinefunction(get_token):
        return credential
    return _AsyncToken(credential)
