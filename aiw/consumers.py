"""WebSocket stream of the change feed (``/ws/feed?since=<cursor>&types=&twin=``).

The consumer authenticates in ``connect()`` (session cookie via Channels' AuthMiddleware),
sends every visible event after the cursor, then follows commits: each commit notification
(``feed.committed``) triggers a read of the events after the last one sent, so delivery comes
from the database, in feed order, and a lost notification only delays, never loses, an event.
Each frame is a change-event.v1 JSON object; its ``cursor`` resumes after it.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from aiw.feed import FEED_GROUP, InvalidCursor, decode_cursor, events_after

BATCH = 500


class FeedConsumer(AsyncJsonWebsocketConsumer):
    """Follows the change feed for one authenticated user."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.types = [t for t in query.get("types", [""])[0].split(",") if t]
        self.twin = query.get("twin", [None])[0]
        await self.accept()
        try:
            self.last_id = await database_sync_to_async(decode_cursor)(query.get("since", ["0"])[0])
        except InvalidCursor as exc:
            await self.send_json({"type": "error", "status": 410, "detail": str(exc),
                                  "resync": "/snapshot"})
            await self.close(code=4410)
            return
        await self.channel_layer.group_add(FEED_GROUP, self.channel_name)
        await self._send_new()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(FEED_GROUP, self.channel_name)

    async def feed_committed(self, message: dict) -> None:
        if message["id"] > self.last_id:
            await self._send_new()

    async def _send_new(self) -> None:
        while True:
            frames = await database_sync_to_async(self._read)()
            for frame in frames:
                await self.send_json(frame)
            if len(frames) < BATCH:
                return

    def _read(self) -> list[dict]:
        from aiw.api.serializers import ChangeEventSerializer
        from aiw.api.views import feed_queryset

        queryset = feed_queryset(self.scope["user"], types=self.types, twin=self.twin)
        events = events_after(self.last_id, queryset, BATCH)
        if events:
            self.last_id = events[-1].id
        return list(ChangeEventSerializer(events, many=True).data)
