"""The azure SDK boundary: the names the adapter uses, imported in one place, and credentials.

azure-servicebus is the optional extra ``amqp1q[azure]``: without it, importing
:mod:`amqp1q.adapters.servicebus` fails here with an ``ImportError`` that names the install
line (``import amqp1q`` itself never needs the SDK). Also the bound on closing SDK objects,
and :func:`_async_credential`, which fits a caller's azure-core credential to the asyncio
client.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Final

from ..._errors import InvalidSetting

try:
    from azure.core.credentials import AccessToken, AzureNamedKeyCredential, AzureSasCredential
    from azure.servicebus import (
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
    "ServiceBusClient",
    "ServiceBusMessage",
    "ServiceBusMessageBatch",
    "ServiceBusReceiveMode",
    "ServiceBusReceivedMessage",
    "ServiceBusReceiver",
    "ServiceBusSender",
    "ServiceBusSubQueue",
    "sb_errors",
]

#: How long closing one SDK object (client, sender, receiver) or a background task may take.
_CLOSE_TIMEOUT: Final = 5.0


async def _open_once(handler: Any) -> None:
    """Open an SDK sender or receiver in one attempt, without the SDK's retries.

    The SDK retries every failure to open -- a refused port, an unknown host, a TLS failure,
    refused credentials -- backing off each time, so the cause was lost behind the connect
    timeout (10 s of nothing). One attempt fails in milliseconds with the cause attached. The
    SDK's retries still apply to everything after (sends, receives, settlements).
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


def _async_credential(credential: Any) -> Any:
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
