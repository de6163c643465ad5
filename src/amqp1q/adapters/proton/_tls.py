"""The ``ssl.SSLContext`` a :class:`~amqp1q.TLSConfig` describes: for the AMQP connection
(``_shared_connection``) and for RabbitMQ's management API over https (``_management_http``)."""

from __future__ import annotations

import logging
import ssl

from ..._settings import TLSConfig

__all__ = ["tls_context"]

log = logging.getLogger("amqp1q.proton")


def tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """Verifying against ``root_ca`` (default: the system's CAs), presenting ``cert``/``key``
    when given; ``insecure_skip_verify`` turns verification off, with a warning."""
    context = ssl.create_default_context(cafile=tls.root_ca)
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    if tls.insecure_skip_verify:
        log.warning("TLS certificate verification is off (insecure_skip_verify=True)")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
