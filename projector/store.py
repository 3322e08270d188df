"""The projection in Redis: one hash per job, merged server-side by a Redis Function.

The function compares the tags of the three groups (DESIGN "The fold is a merge") and copies
the winners' fields, so a delta can be merged any number of times in any order. It announces
a change of the head or public group on the job's channel with SPUBLISH (sharded pub/sub:
it works on a single server and stays slot-local on a cluster, where the channel shares the
job key's hash tag). Functions rather than EVALSHA: in a cluster pipeline, FCALL is routed
by key slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from contracts.job_state import JobState, change_channel, job_key, merge_args
from projector.fold import JobRef

LIBRARY = "jobs_projection"
MERGE_FUNCTION = "job_merge_v1"

# Tags compare as (seq, event_id). Seqs are at most 2^53-1, exact as Lua numbers; event ids
# are compared byte by byte, not with Lua's `<` on strings, which follows the server's locale.
MERGE_LIBRARY = f"""#!lua name={LIBRARY}
local function id_greater(a, b)
  if a == b then return false end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

local function wins(seq, id, cur_seq, cur_id, least_seq_wins)
  if not cur_seq then return true end
  cur_seq = tonumber(cur_seq)
  if seq ~= cur_seq then
    if least_seq_wins then return seq < cur_seq end
    return seq > cur_seq
  end
  return id_greater(id, cur_id)
end

-- KEYS[1] job hash; ARGV: channel, head (seq, id, status, manifest),
-- origin (seq, id, type, created_at), public (seq, id, event); '' seq = group absent.
local function job_merge(keys, args)
  local key = keys[1]
  local cur = redis.call('HMGET', key, 'hs', 'he', 'os', 'oe', 'ps', 'pe')
  local set = {{}}
  local announce = false
  local public_seq = cur[5]
  if args[2] ~= '' and wins(tonumber(args[2]), args[3], cur[1], cur[2], false) then
    table.insert(set, 'hs') table.insert(set, args[2])
    table.insert(set, 'he') table.insert(set, args[3])
    table.insert(set, 'st') table.insert(set, args[4])
    table.insert(set, 'mf') table.insert(set, args[5])
    announce = true
  end
  if args[6] ~= '' and wins(tonumber(args[6]), args[7], cur[3], cur[4], true) then
    table.insert(set, 'os') table.insert(set, args[6])
    table.insert(set, 'oe') table.insert(set, args[7])
    table.insert(set, 'ty') table.insert(set, args[8])
    table.insert(set, 'ca') table.insert(set, args[9])
  end
  if args[10] ~= '' and wins(tonumber(args[10]), args[11], cur[5], cur[6], false) then
    table.insert(set, 'ps') table.insert(set, args[10])
    table.insert(set, 'pe') table.insert(set, args[11])
    table.insert(set, 'le') table.insert(set, args[12])
    announce = true
    public_seq = args[10]
  end
  if #set == 0 then return 0 end
  redis.call('HSET', key, unpack(set))
  if announce then redis.call('SPUBLISH', args[1], public_seq or '0') end
  return #set / 2
end

redis.register_function('{MERGE_FUNCTION}', job_merge)
"""

AnyRedis = Redis | RedisCluster


async def load_merge_function(redis: AnyRedis) -> None:
    """Load (or replace) the merge library; on a cluster, on every primary."""
    if isinstance(redis, RedisCluster):
        await redis.execute_command(
            "FUNCTION", "LOAD", "REPLACE", MERGE_LIBRARY, target_nodes=RedisCluster.PRIMARIES
        )
    else:
        await redis.execute_command("FUNCTION", "LOAD", "REPLACE", MERGE_LIBRARY)


class ProjectionStore:
    """Writes job deltas of one projection version."""

    def __init__(self, redis: AnyRedis, version: str) -> None:
        self.redis = redis
        self.version = version

    async def merge(self, deltas: Mapping[JobRef, JobState]) -> list[int]:
        """Merge every delta in one pipelined round trip; returns fields written per job.

        Raises the client's error when any merge failed: the caller must then not commit.
        """
        if not deltas:
            return []
        version = self.version
        pipe: Any = self.redis.pipeline(transaction=False)
        for (tenant_id, job_id), state in deltas.items():
            key = job_key(version, tenant_id, job_id)
            channel = change_channel(version, tenant_id, job_id)
            pipe.fcall(MERGE_FUNCTION, 1, key, channel, *merge_args(state))
        results: list[int] = await pipe.execute(raise_on_error=True)
        return results

    async def read(self, tenant_id: str, job_id: str) -> dict[str, str]:
        raw: dict[Any, Any] = await self.redis.hgetall(job_key(self.version, tenant_id, job_id))
        return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
