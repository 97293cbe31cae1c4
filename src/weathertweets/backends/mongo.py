"""MongoDB archive via pymongo's native async API (also works against FerretDB).

`mongodb://host:27017/weathertweets` — the database is the URL's path (default `weathertweets`),
the collection is a setting (default `register`, the seed's). Documents are keyed by the tweet
id, so a replayed batch inserts nothing new: duplicate-key errors are expected, not failures.
Every time is a BSON date; `timestamp` repeats `received_at` under the original's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError

from weathertweets.backends.refreshed import Refreshed
from weathertweets.domain import Tweet
from weathertweets.ports import ArchivedTweet, BackendUnavailable, SinkRejected

DUPLICATE_KEY = 11000
RECENT_KEPT = 1000  # the newest tweets kept ready for the live page and GET /api/v1/tweets
# Write errors that say "not now" rather than "never" (shutdown, failover, write conflicts).
TRANSIENT_CODES = {91, 189, 10107, 11600, 11602, 13435, 13436, 112}


class MongoStore:
    def __init__(self, url: str, collection: str = "register") -> None:
        database = urlsplit(url).path.strip("/") or "weathertweets"
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=5000, connect=False
        )
        self._collection = self._client[database][collection]
        self._count = Refreshed(self._count_now)
        self._recent = Refreshed(partial(self._query_recent, None, RECENT_KEPT))

    async def start(self) -> None:
        try:
            await self._collection.create_index("pais")
            await self._collection.create_index("received_at")
        except PyMongoError as error:
            raise BackendUnavailable(f"MongoDB: {error}") from error

    async def archive(self, docs: Sequence[ArchivedTweet]) -> None:
        if not docs:
            return
        documents = [
            {
                "_id": d.tweet.id,
                "texto": d.tweet.texto,
                "pais": d.tweet.pais,
                "timestamp": d.tweet.received_at,  # the original's field: when it came in
                "received_at": d.tweet.received_at,
                "archived_at": d.archived_at,
            }
            for d in docs
        ]
        try:
            await self._collection.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            if error.details.get("writeConcernErrors"):
                raise BackendUnavailable(f"MongoDB write concern: {error}") from error
            others = [e for e in error.details["writeErrors"] if e["code"] != DUPLICATE_KEY]
            if any(e["code"] in TRANSIENT_CODES for e in others):
                raise BackendUnavailable(f"MongoDB: {others[0]['errmsg']}") from error
            if others:  # these documents will never be accepted: the rest are stored
                first = others[0].get("errmsg", others[0]["code"])
                raise SinkRejected(f"MongoDB: {first}", [e["index"] for e in others]) from error
        except PyMongoError as error:
            raise BackendUnavailable(f"MongoDB: {error}") from error

    async def expire(self, received_before: datetime, chunk: int = 5000) -> int:
        """In chunks of the oldest (by the `received_at` index): no single long delete."""
        total = 0
        try:
            while True:
                old = self._collection.find({"received_at": {"$lt": received_before}}, {"_id": 1})
                ids = [d["_id"] async for d in old.sort("received_at", 1).limit(chunk)]
                if not ids:
                    return total
                done = await self._collection.delete_many({"_id": {"$in": ids}})
                total += done.deleted_count
        except PyMongoError as error:
            raise BackendUnavailable(f"MongoDB: {error}") from error

    async def recent(self, pais: str | None, limit: int) -> list[ArchivedTweet]:
        """The newest tweets of every country come from a list refreshed behind the readers
        (the live page asks every second); one country's are queried (index on `pais`)."""
        if pais is None and limit <= RECENT_KEPT:
            return (await self._recent.get())[:limit]
        return await self._query_recent(pais, limit)

    async def _query_recent(self, pais: str | None, limit: int) -> list[ArchivedTweet]:
        query = {} if pais is None else {"pais": pais}
        try:
            cursor = self._collection.find(query).sort([("received_at", -1), ("_id", -1)])
            found = await cursor.limit(limit).to_list(limit)
        except PyMongoError as error:
            raise BackendUnavailable(f"MongoDB: {error}") from error
        return [
            ArchivedTweet(
                Tweet(d["_id"], d["texto"], d["pais"], d["received_at"]), d["archived_at"]
            )
            for d in found
        ]

    async def count(self) -> int:
        """How many tweets are archived, refreshed behind the readers (about once a second)."""
        return await self._count.get()

    async def _count_now(self) -> int:
        """The collection's storage count: metadata on MongoDB; on FerretDB a scan of its SQL
        table (~0.5 µs a document), still far cheaper than `count_documents`, which decodes
        every document."""
        try:
            stats = await self._collection.aggregate([{"$collStats": {"count": {}}}])
            return sum(int(shard["count"]) for shard in await stats.to_list(None))  # per shard
        except OperationFailure:
            pass  # a server without $collStats
        except PyMongoError as error:
            raise BackendUnavailable(f"MongoDB: {error}") from error
        try:
            return await self._collection.estimated_document_count()
        except PyMongoError as error:
            raise BackendUnavailable(f"MongoDB: {error}") from error

    async def ping(self) -> None:
        try:
            await self._client.admin.command("ping")
        except (ConnectionFailure, PyMongoError) as error:
            raise BackendUnavailable(f"MongoDB: {error}") from error

    async def close(self) -> None:
        await self._client.close()
