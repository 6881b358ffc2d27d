"""Celery's Redis transport (kombu's), with less work per message, and a way to enqueue inside our pipeline.

kombu's Redis channel builds a new `redis.Redis` client object for every operation that is not the
consumer's BRPOP: each publish, each message taken (the unacked bookkeeping, on the consumer thread,
before the next BRPOP is sent) and each acknowledgement. Here the channel keeps one synchronous client
over its connection pool (redis-py clients are thread-safe: each command takes a connection from the
pool), so a message costs its round trips and no object building.

Taking several messages per BRPOP: kombu's consumer takes one message per BRPOP, then records it as
unacknowledged (MULTI: ZADD + HSET) in a second round trip, then sends the next BRPOP. Here that second
round trip is `TAKE_SCRIPT`, which records the BRPOP's message and also pops up to `read_batch - 1`
more (the queue's lists in BRPOP's order, within the prefetch credit left), recording each in the same
unacked hash and index, atomically; they are then delivered one by one as if each had come from its
own BRPOP. A burst of messages thus costs two round trips per `read_batch` messages instead of two per
message, and nothing changes for acks, rejects, restores or the visibility timeout (the same unacked
entries, written before delivery, as kombu writes them). `read_batch` is a transport option (1: kombu's
behaviour).

`enqueue_into(pipe)`: while it is active in a thread, Celery messages published by that thread are not
sent but added to `pipe` (kombu's own publish-batch hook, so the key and payload are kombu's), and go
out with the other commands of that pipeline: the client writes a job's record, its `queued` event and
its Celery message in one round trip (worker/client.py).

`TRANSPORT` is this transport's import path, for Celery's `broker_transport` (worker/app.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

TRANSPORT = "worker.broker:Transport"
READ_BATCH = 16  # messages taken per BRPOP at most (transport option `read_batch`)

# KEYS: unacked hash, unacked index, then the lists to pop from in order. ARGV: now, how many more to
# pop, the BRPOP'd message's delivery tag and unacked entry. Records that message, pops and records up
# to ARGV[2] more (kombu's entry: [payload, exchange, routing key]); returns {list index, payload}...
# A payload that is not a kombu message goes back where it was and ends the take (the next BRPOP
# gets it, and kombu deals with it as usual).
TAKE_SCRIPT = """
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
local left = tonumber(ARGV[2])
local taken = {}
for i = 3, #KEYS do
  while left > 0 do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    local ok, tag, info = pcall(function()
      local props = cjson.decode(item)['properties']
      return props['delivery_tag'], props['delivery_info']
    end)
    if not ok or type(tag) ~= 'string' or type(info) ~= 'table' then
      redis.call('RPUSH', KEYS[i], item)
      return taken
    end
    redis.call('ZADD', KEYS[2], ARGV[1], tag)
    redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ','
               .. cjson.encode(info['routing_key']) .. ']')
    taken[#taken + 1] = i - 3
    taken[#taken + 1] = item
    left = left - 1
  end
  if left == 0 then break end
end
return taken
"""

_pipeline: contextvars.ContextVar[Any] = contextvars.ContextVar("orcd_enqueue_into", default=None)


class _PipelineBatch:
    """kombu's publish-batch interface (`add(command, *args)`) over a redis-py pipeline."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def add(self, name: str, *args: Any) -> None:
        getattr(self.pipe, name)(*args)


@contextlib.contextmanager
def enqueue_into(pipe: Any) -> Iterator[None]:
    """Messages published by this thread meanwhile are added to `pipe` instead of sent."""
    token = _pipeline.set(pipe)
    try:
        yield
    finally:
        _pipeline.reset(token)


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS; the unacked bookkeeping of a message read by a BRPOP also takes more (above)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()  # tags `TAKE_SCRIPT` recorded, not yet delivered

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.recorded:  # taken with another message: already in the unacked hash
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        elif self.channel.reading:
            self.channel.take_more(message, delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    from_transport_options = kombu_redis.Channel.from_transport_options + ("read_batch",)
    read_batch = READ_BATCH
    reading = False  # inside `_brpop_read`: the message being delivered came from a BRPOP
    _sync_client: Any = None
    _take_script: Any = None

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's: deliver the BRPOP's message; then the messages taken with it, in order."""
        self.reading, self._taken = not self.global_keyprefix and self.read_batch > 1, []
        try:
            delivered = super()._brpop_read(**options)
        except BaseException:
            self._put_back(self._taken)
            raise
        finally:
            self.reading = False
        taken, self._taken = self._taken, []
        for k, (queue, payload) in enumerate(taken):
            try:
                self.connection._deliver(payload, queue)
            except BaseException:  # the rest back to the front of their lists, not to wait for the
                self._put_back(taken[k + 1:])  # visibility timeout
                raise
        return delivered

    def take_more(self, message: Any, delivery_tag: str) -> None:
        """Record the BRPOP's `message` as unacknowledged, and take (pop and record) up to `read_batch`
        - 1 more within the prefetch credit; they wait in `_taken` for `_brpop_read` to deliver."""
        delivery = message.delivery_info
        credit = self.qos.can_consume_max_estimate()  # None: no prefetch limit
        more = self.read_batch - 1 if credit is None else max(0, min(self.read_batch, credit) - 1)
        queues = self._queue_cycle.consume(len(self.active_queues))
        lists = [(queue, self._q_for_pri(queue, pri)) for pri in self.priority_steps for queue in queues]
        if self._take_script is None:
            self._take_script = self._create_client().register_script(TAKE_SCRIPT)
        with self.conn_or_acquire() as client:
            found = self._take_script(
                keys=[self.unacked_key, self.unacked_index_key, *(name for _queue, name in lists)],
                args=[time.time(), more, delivery_tag,
                      dumps([message._raw, delivery["exchange"], delivery["routing_key"]])], client=client)
        pairs = zip(found[::2], found[1::2], strict=True)
        self._taken = [(lists[int(index)][0], loads(item)) for index, item in pairs]
        self.qos.recorded.update(payload["properties"]["delivery_tag"] for _queue, payload in self._taken)
        if self._taken:
            logger.debug("took %d more messages with %s", len(self._taken), delivery_tag)

    def _put_back(self, taken: list[tuple[str, Any]]) -> None:
        """Taken messages not delivered: from the unacked hash back to the front of their lists."""
        for _queue, payload in reversed(taken):  # RPUSH (kombu's leftmost=False): the first is next in line
            tag = payload["properties"]["delivery_tag"]
            self.qos.recorded.discard(tag)
            self.qos.restore_by_tag(tag, leftmost=False)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the consumer's BRPOP client: kombu already keeps one
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:  # a closed channel drops its pool
            client = self._sync_client = super()._create_client()
        return client

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        pipe = _pipeline.get()
        if pipe is not None and kwargs.get("_publish_batch") is None:
            kwargs["_publish_batch"] = _PipelineBatch(pipe)
        super()._put(queue, message, **kwargs)


class Transport(kombu_redis.Transport):
    Channel = Channel
