"""The ingest gRPC service over a real channel: our API and the seed's wire contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import free_port
from weathertweets.backends.sqlite_broker import SqliteBroker
from weathertweets.domain import decode_record
from weathertweets.proto import ingest_pb2, ingest_pb2_grpc
from weathertweets.services.ingest import start_ingest_server


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[SqliteBroker]:
    broker = SqliteBroker(tmp_path / "broker.db")
    await broker.start()
    yield broker
    await broker.close()


@pytest.fixture
async def channel(broker: SqliteBroker) -> AsyncIterator[grpc.aio.Channel]:
    address = f"127.0.0.1:{free_port()}"
    server = await start_ingest_server(broker, address)
    async with grpc.aio.insecure_channel(address) as channel:
        yield channel
    await server.stop(grace=1)


async def _published(broker: SqliteBroker) -> list[tuple[str, str]]:
    consumer = broker.consumer("test")
    messages = await consumer.poll(1000, timeout=0.5)
    await consumer.close()
    return [(decode_record(m.value).texto, decode_record(m.value).pais) for m in messages]


async def test_publish_and_publish_batch(broker: SqliteBroker, channel: grpc.aio.Channel) -> None:
    stub = ingest_pb2_grpc.TweetIngestStub(channel)
    ack = await stub.Publish(ingest_pb2.Tweet(texto="Lluvia", pais="Guatemala"))
    assert len(ack.id) == 26
    batch = ingest_pb2.TweetBatch(
        tweets=[ingest_pb2.Tweet(texto=f"Sol {i}", pais="Chile") for i in range(3)]
    )
    batch_ack = await stub.PublishBatch(batch)
    assert batch_ack.accepted == 3
    assert len(set(batch_ack.ids)) == 3
    assert await _published(broker) == [
        ("Lluvia", "Guatemala"),
        ("Sol 0", "Chile"),
        ("Sol 1", "Chile"),
        ("Sol 2", "Chile"),
    ]


async def test_invalid_tweets_are_refused_and_not_published(
    broker: SqliteBroker, channel: grpc.aio.Channel
) -> None:
    stub = ingest_pb2_grpc.TweetIngestStub(channel)
    batch = ingest_pb2.TweetBatch(
        tweets=[ingest_pb2.Tweet(texto="Sol", pais="Chile"), ingest_pb2.Tweet(texto=" ", pais="X")]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PublishBatch(batch)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "texto" in (caught.value.details() or "")
    assert await _published(broker) == []


def _proto_string(field: int, text: str) -> bytes:
    data = text.encode()
    assert len(data) < 128
    return bytes([field << 3 | 2, len(data)]) + data


async def test_the_seed_go_client_wire_contract(
    broker: SqliteBroker, channel: grpc.aio.Channel
) -> None:
    """Bytes as the seed's Go client sends them, to the method name it uses."""
    call = channel.unary_unary("/confproto.getInfo/returnInfo")
    request = _proto_string(1, "Calor sofocante") + _proto_string(2, "Turquía")
    reply: bytes = await call(request)
    assert reply[0] == 0x0A  # field 1 (info), length-delimited
    assert "Tweet recibido" in reply[2:].decode()
    assert await _published(broker) == [("Calor sofocante", "Turquía")]
