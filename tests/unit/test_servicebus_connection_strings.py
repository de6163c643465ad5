"""Service Bus connection strings are checked in ``from_url``: everything azure-servicebus
refuses is refused there, as an InvalidURL naming the part, never showing the key."""

from __future__ import annotations

import pytest
from azure.servicebus.aio import ServiceBusClient
from hypothesis import given
from hypothesis import strategies as st

from amqp1q import InvalidURL, JobQueue
from amqp1q._urls import ServiceBusEndpoint, parse_url
from amqp1q.adapters.servicebus import ServiceBusAdapter

KEY = "c2VjcmV0LWtleS12YWx1ZS0xMjM0NTY3ODkw"  # never in a message
ENDPOINT = "Endpoint=sb://ns.servicebus.windows.net/"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # Issue 19: this passed from_url, then open() raised the SDK's plain ValueError.
        ("Endpoint=sb://x;EntityPath=q", "has no credentials"),
        (f"{ENDPOINT};EntityPath=q", "SharedAccessKeyName=...;SharedAccessKey=..."),
        (f"{ENDPOINT};SharedAccessKeyName=app;EntityPath=q", "has a SharedAccessKeyName but no"),
        (f"{ENDPOINT};SharedAccessKey={KEY}", "has a SharedAccessKey but no SharedAccessKeyName"),
        (f"{ENDPOINT};SharedAccessKeyName=app;SharedAccessKey=", "gives SharedAccessKey no value"),
        (f"{ENDPOINT};SharedAccessKeyName=;SharedAccessKey={KEY}", "SharedAccessKeyName no value"),
        (f"{ENDPOINT};SharedAccessSignature=", "gives SharedAccessSignature no value"),
        ("Endpoint=;SharedAccessKeyName=app;SharedAccessKey=x", "gives Endpoint no value"),
        (
            f"{ENDPOINT};SharedAccessKeyName=a;SharedAccessKey={KEY};SharedAccessSignature=x",
            "both a SharedAccessKey and a SharedAccessSignature",
        ),
    ],
)
def test_what_the_sdk_refuses_is_refused_by_from_url(text: str, problem: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the SDK's plain ValueError is the point
        ServiceBusClient.from_connection_string(text)
    with pytest.raises(InvalidURL) as caught:
        JobQueue.from_url(text, queue="q")
    assert problem in str(caught.value)
    assert KEY not in f"{caught.value} {caught.value!r}"


def test_a_good_connection_string_builds_the_sdk_client() -> None:
    for text in (
        f"{ENDPOINT};SharedAccessKeyName=app;SharedAccessKey={KEY};EntityPath=q",
        f"{ENDPOINT};SharedAccessSignature=SharedAccessSignature sr=x&sig=y&se=1&skn=app",
        "Endpoint=sb://localhost:5672;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;EntityPath=queue.1",
    ):
        endpoint = parse_url(text)
        assert isinstance(endpoint, ServiceBusEndpoint)
        adapter = ServiceBusAdapter(endpoint, "q")
        assert adapter._make_client() is not None


_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "Endpoint": st.sampled_from(["", "sb://ns.servicebus.windows.net/", "sb://127.0.0.1:5"]),
        "SharedAccessKeyName": st.sampled_from(["", "app"]),
        "SharedAccessKey": st.sampled_from(["", KEY]),
        "SharedAccessSignature": st.sampled_from(["", "SharedAccessSignature sr=a&sig=b&se=9"]),
        "EntityPath": st.sampled_from(["", "q"]),
        "UseDevelopmentEmulator": st.sampled_from(["", "true", "false"]),
    },
)


@given(_FIELDS)
def test_from_url_accepts_only_what_the_sdk_accepts(fields: dict[str, str]) -> None:
    text = ";".join(f"{key}={value}" for key, value in fields.items())
    try:
        ServiceBusClient.from_connection_string(text)
    except ValueError:
        sdk_refuses = True
    else:
        sdk_refuses = False
    refusal: InvalidURL | None = None
    try:
        endpoint = parse_url(text)
    except InvalidURL as exc:
        refusal = exc
    if refusal is not None:
        assert KEY not in str(refusal)
        return
    assert not sdk_refuses, f"from_url took what the SDK refuses: {text!r}"
    assert isinstance(endpoint, ServiceBusEndpoint)
    ServiceBusAdapter(endpoint, "q")._make_client()  # and the SDK takes what the adapter builds
