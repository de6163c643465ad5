"""The sans-IO engine, client and server wired back to back with no sockets (h11's way)."""

from __future__ import annotations

from typing import Any

import pytest

from amqp1q.adapters.proton._engine import SEND_BATCH, Engine
from amqp1q.adapters.proton._links import (
    ACCEPTED,
    MODIFIED,
    REJECTED,
    RELEASED,
    Condition,
    Delivery,
    DeliveryOutcome,
    Link,
    ReceiverLink,
    SenderLink,
)


class Peer:
    """An engine's owner that records what it hears and can act as a tiny broker."""

    def __init__(self, *, accept_links: bool = True) -> None:
        self.events: list[Any] = []
        self.links: list[Link] = []
        self.received: list[tuple[Delivery, bytes]] = []
        self.accept_links = accept_links
        self.refuse_with: Condition | None = None

    def on_remote_open(self, engine: Engine) -> None:
        self.events.append("open")
        if engine.server:
            engine.open()

    def on_remote_close(self, engine: Engine, condition: Condition | None) -> None:
        self.events.append(("close", condition))

    def on_transport_error(self, engine: Engine, condition: Condition | None) -> None:
        self.events.append(("error", condition))

    def on_link_remote_open(self, engine: Engine, link: Link) -> None:
        self.links.append(link)
        wrapper = link.wrapper
        if self.refuse_with is not None:
            link.open()
            link.close(self.refuse_with)
            return
        if link.is_sender:
            wrapper.source.address = link.remote_source_address
        else:
            wrapper.target.address = link.remote_target_address
            assert isinstance(link, ReceiverLink)
            link.on_message = lambda delivery, body: self.received.append((delivery, body))
        link.open()


def pump(a: Engine, b: Engine) -> int:
    """Move bytes both ways until neither side has anything to say; return bytes moved."""
    moved = 0
    for _ in range(1000):
        out_a = a.data_to_send()
        if out_a:
            b.receive_data(out_a)
        out_b = b.data_to_send()
        if out_b:
            a.receive_data(out_b)
        if not out_a and not out_b:
            return moved
        moved += len(out_a) + len(out_b)
    raise AssertionError("the engines never went quiet")


@pytest.fixture
def pair() -> tuple[Engine, Peer, Engine, Peer]:
    client_peer, server_peer = Peer(), Peer()
    client = Engine(client_peer, container_id="client", sasl=False)
    server = Engine(server_peer, server=True, container_id="server", sasl=False)
    client.open()
    pump(client, server)
    return client, client_peer, server, server_peer


def test_open_and_close_handshake(pair: tuple[Engine, Peer, Engine, Peer]) -> None:
    client, client_peer, server, server_peer = pair
    assert client.remote_opened
    assert server.remote_opened
    assert client.remote_container == "server"
    assert server.remote_container == "client"
    client.close()
    pump(client, server)
    assert ("close", None) in server_peer.events
    assert ("close", None) in client_peer.events
    assert client.output_closed
    assert server.output_closed


def test_send_and_accept(pair: tuple[Engine, Peer, Engine, Peer]) -> None:
    client, _, server, server_peer = pair
    sender = client.open_sender("jobs")
    opened: list[Link] = []
    sender.on_remote_open = opened.append
    pump(client, server)
    assert opened == [sender]
    assert sender.credit == 0
    (remote,) = server_peer.links
    assert isinstance(remote, ReceiverLink)
    assert remote.remote_target_address == "jobs"
    remote.flow(3)
    pump(client, server)
    assert sender.credit == 3
    outcomes: list[DeliveryOutcome] = []
    for body in (b"one", b"\x00\xfftwo", b"x" * 70_000):
        sender.send(body, outcomes.append)
    assert sender.unsettled == 3
    pump(client, server)
    assert [body for _, body in server_peer.received] == [b"one", b"\x00\xfftwo", b"x" * 70_000]
    for delivery, _ in server_peer.received:
        assert delivery.settle(ACCEPTED)
    pump(client, server)
    assert [o.state for o in outcomes] == [ACCEPTED] * 3
    assert all(o.accepted for o in outcomes)
    assert sender.unsettled == 0
    assert sender.credit == 0


def test_rejected_modified_and_released_outcomes(pair: tuple[Engine, Peer, Engine, Peer]) -> None:
    client, _, server, server_peer = pair
    sender = client.open_sender("jobs")
    pump(client, server)
    server_peer.links[0].flow(3)  # type: ignore[attr-defined]
    pump(client, server)
    outcomes: list[DeliveryOutcome] = []
    for body in (b"a", b"b", b"c"):
        sender.send(body, outcomes.append)
    pump(client, server)
    (d1, _), (d2, _), (d3, _) = server_peer.received
    d1.settle(REJECTED, condition=Condition("amqp:precondition-failed", "no thanks"))
    pump(client, server)
    d2.settle(MODIFIED, delivery_failed=True, undeliverable_here=True)
    pump(client, server)
    d3.settle(RELEASED)
    pump(client, server)
    rejected, modified, released = outcomes
    assert rejected.name == "rejected"
    assert rejected.condition == Condition("amqp:precondition-failed", "no thanks")
    assert (modified.name, modified.delivery_failed, modified.undeliverable_here) == (
        "modified",
        True,
        True,
    )
    assert released.name == "released"


def test_receive_with_binary_tags_and_settle(pair: tuple[Engine, Peer, Engine, Peer]) -> None:
    client, _, server, server_peer = pair
    receiver = client.open_receiver("jobs")
    got: list[tuple[Delivery, bytes]] = []
    receiver.on_message = lambda d, body: got.append((d, body))
    pump(client, server)
    (remote,) = server_peer.links
    assert isinstance(remote, SenderLink)
    assert remote.remote_source_address == "jobs"
    assert remote.credit == 0
    receiver.flow(2)
    pump(client, server)
    assert remote.credit == 2
    outcomes: dict[str, DeliveryOutcome] = {}
    lock_token = bytes(range(16))
    remote.send(b"first", lambda o: outcomes.setdefault("first", o), tag=lock_token)
    remote.send(b"second", lambda o: outcomes.setdefault("second", o), tag=b"\xff\xfe")
    pump(client, server)
    assert [body for _, body in got] == [b"first", b"second"]
    assert got[0][0].tag == lock_token
    assert not got[0][0].settled
    got[0][0].settle(ACCEPTED)
    got[1][0].settle(MODIFIED, delivery_failed=True)
    pump(client, server)
    assert (outcomes["first"].name, outcomes["second"].name) == ("accepted", "modified")
    assert outcomes["second"].delivery_failed
    assert receiver.credit == 0


def test_presettled_deliveries_need_no_settlement(pair: tuple[Engine, Peer, Engine, Peer]) -> None:
    client, _, server, server_peer = pair
    receiver = client.open_receiver("jobs", settled=True)
    got: list[tuple[Delivery, bytes]] = []
    receiver.on_message = lambda d, body: got.append((d, body))
    pump(client, server)
    (remote,) = server_peer.links
    assert isinstance(remote, SenderLink)
    assert remote.remote_snd_settle_mode == 1  # settled
    receiver.flow(1)
    pump(client, server)
    remote.send(b"fire and forget", None)
    pump(client, server)
    assert got[0][1] == b"fire and forget"
    assert got[0][0].remote_settled
    assert got[0][0].settled


def test_drain_returns_unused_credit(pair: tuple[Engine, Peer, Engine, Peer]) -> None:
    client, _, server, server_peer = pair
    receiver = client.open_receiver("jobs")
    drained: list[ReceiverLink] = []
    receiver.on_drained = drained.append
    pump(client, server)
    (remote,) = server_peer.links
    receiver.flow(5)
    pump(client, server)
    assert receiver.drain()
    pump(client, server)
    # the server side has nothing to send: it answers the drain by spending its credit
    from cproton_ffi import lib

    assert lib.pn_link_get_drain(remote._ptr)
    lib.pn_link_drained(remote._ptr)
    pump(client, server)
    assert drained == [receiver]
    assert receiver.credit == 0
    assert not receiver.drain()  # nothing left to drain


def test_refused_attach_reports_the_condition(pair: tuple[Engine, Peer, Engine, Peer]) -> None:
    client, _, server, server_peer = pair
    server_peer.refuse_with = Condition("amqp:not-found", "no queue 'nope'")
    receiver = client.open_receiver("nope")
    closed: list[tuple[Link, Condition | None]] = []
    receiver.on_remote_close = lambda link, cond: closed.append((link, cond))
    pump(client, server)
    assert closed == [(receiver, Condition("amqp:not-found", "no queue 'nope'"))]
    assert not receiver.alive
    assert client.links == []


def test_settling_after_the_link_died_is_refused(pair: tuple[Engine, Peer, Engine, Peer]) -> None:
    client, _, server, server_peer = pair
    receiver = client.open_receiver("jobs")
    got: list[tuple[Delivery, bytes]] = []
    receiver.on_message = lambda d, body: got.append((d, body))
    pump(client, server)
    receiver.flow(1)
    pump(client, server)
    remote = server_peer.links[0]
    assert isinstance(remote, SenderLink)
    remote.send(b"held", lambda outcome: None)
    pump(client, server)
    remote.close(Condition("amqp:link:detach-forced", "bye"))
    pump(client, server)
    delivery = got[0][0]
    assert not delivery.link.alive
    assert delivery.settle(ACCEPTED) is False


def test_connection_close_with_an_error_kills_every_link(
    pair: tuple[Engine, Peer, Engine, Peer],
) -> None:
    client, client_peer, server, _ = pair
    sender = client.open_sender("jobs")
    receiver = client.open_receiver("jobs")
    died: list[str] = []
    sender.on_remote_close = lambda link, cond: died.append("sender")
    receiver.on_remote_close = lambda link, cond: died.append("receiver")
    pump(client, server)
    server.close(Condition("amqp:connection:forced", "shutting down"))
    pump(client, server)
    assert sorted(died) == ["receiver", "sender"]
    assert ("close", Condition("amqp:connection:forced", "shutting down")) in client_peer.events
    assert client.error == Condition("amqp:connection:forced", "shutting down")


def test_garbage_input_is_a_transport_error() -> None:
    peer = Peer()
    server = Engine(peer, server=True, sasl=False)
    server.receive_data(b"HTTP/1.1 200 OK\r\n\r\n")
    assert any(isinstance(e, tuple) and e[0] == "error" for e in peer.events)
    assert server.data_to_send().startswith(b"AMQP")  # proton answers with its header
    assert server.output_closed


def test_idle_timeout_sends_heartbeats(pair: tuple[Engine, Peer, Engine, Peer]) -> None:
    peer_c, peer_s = Peer(), Peer()
    client = Engine(peer_c, sasl=False, idle_timeout=2.0)
    server = Engine(peer_s, server=True, sasl=False)
    client.open()
    pump(client, server)
    server.tick(1000.0)
    assert server.data_to_send() == b""
    deadline = server.tick(1001.5)  # the client asked for frames at least every 2 s
    assert deadline > 1001.5
    assert server.data_to_send() != b""  # an empty frame: the heartbeat


def test_a_links_own_session_ends_after_its_detach_is_answered(
    pair: tuple[Engine, Peer, Engine, Peer],
) -> None:
    """detach, then end only once the peer answered: RabbitMQ 3.10 given both back to back
    sometimes answers neither, and a consumer's close waits for the detach's answer."""
    client, _, server, _ = pair
    receiver = client.open_receiver("jobs")
    pump(client, server)
    assert receiver.own_session is not None
    receiver.close()
    assert receiver.own_session is not None  # not with the detach
    pump(client, server)
    assert receiver.own_session is None  # the answer ended it
    assert client.links == []


def test_a_links_session_can_be_ended_when_its_detach_goes_unanswered(
    pair: tuple[Engine, Peer, Engine, Peer],
) -> None:
    client, _, server, _ = pair
    receiver = client.open_receiver("jobs")
    pump(client, server)
    receiver.close()
    receiver.end_session()
    assert receiver.own_session is None
    pump(client, server)
    assert client.links == []


def test_a_burst_of_sends_is_written_every_send_batch_messages_outside_dispatch(
    pair: tuple[Engine, Peer, Engine, Peer],
) -> None:
    """The owner is asked to write after SEND_BATCH messages (a pipeline), and what it writes
    then reaches the peer; sends made while events are dispatched only mark output."""
    client, _, server, server_peer = pair
    sender = client.open_sender("jobs")
    pump(client, server)
    (remote,) = server_peer.links
    assert isinstance(remote, ReceiverLink)
    remote.flow(3 * SEND_BATCH + 5)
    pump(client, server)
    writes: list[bytes] = []
    client.write_now = lambda: writes.append(client.data_to_send())
    for _ in range(3 * SEND_BATCH + 5):
        sender.send(b"job", None)
    assert len(writes) == 3
    assert all(writes)
    for chunk in writes:
        server.receive_data(chunk)
    assert len(server_peer.received) == 3 * SEND_BATCH
    pump(client, server)  # the last 5: left for the end of the loop's turn
    assert len(server_peer.received) == 3 * SEND_BATCH + 5
    # Sent from a flow event (inside dispatch): never written from within it.
    remote.flow(2 * SEND_BATCH)
    sender.on_flow = lambda link: [sender.send(b"job", None) for _ in range(2 * SEND_BATCH)]
    writes.clear()
    client.receive_data(server.data_to_send())
    assert writes == []
    pump(client, server)
    assert len(server_peer.received) == 5 * SEND_BATCH + 5
