"""The projection in Redis: one hash per job, merged server-side by a Redis Function.

The function (`jobs.lua`) compares the tags of the three groups as the fold ranks them and
copies the winners' values, so a delta can be merged any number of times in any order. It
announces every change, with the job's groups as they now are, on the job's channel (named
like the job's key) with SPUBLISH (sharded pub/sub: it works on a single server and stays
slot-local on a cluster). Functions rather than EVALSHA: in a cluster pipeline, FCALL is
routed by key slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from hiredis import pack_command
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from contracts.job_state import JobState, job_key, lua_prelude, pack_delta
from contracts.redis_client import AnyRedis
from projector.fold import JobRef

_CODE = (resources.files("projector") / "jobs.lua").read_text()
_PRELUDE = lua_prelude()
# Every change of the code, or of the format it reads, names new functions: during a rolling
# upgrade each release keeps its own (loading a library of the same name would replace the
# other's, and each would keep reloading its own).
_SUFFIX = "_" + hashlib.sha1((_PRELUDE + _CODE).encode(), usedforsecurity=False).hexdigest()[:10]
LIBRARY = f"jobs{_SUFFIX}"
MERGE_FUNCTION = f"job_merge{_SUFFIX}"
MERGE_EXPIRING_FUNCTION = f"job_merge_expiring{_SUFFIX}"
DIGEST_FUNCTION = f"job_digests{_SUFFIX}"
REPLACE_FUNCTION = f"job_replace_if_unchanged{_SUFFIX}"
SWITCH_FUNCTION = f"job_switch_version{_SUFFIX}"
LIBRARY_CODE = f"#!lua name={LIBRARY}\n{_PRELUDE}local SUFFIX = '{_SUFFIX}'\n{_CODE}"


async def load_functions(redis: AnyRedis) -> None:
    """Load (or replace) the projection's functions; on a cluster, on every primary."""
    if isinstance(redis, RedisCluster):
        # "FUNCTION LOAD" as one command name: the cluster client routes by the name (split
        # into "FUNCTION", "LOAD" it looks for a key to route by and refuses the command).
        await redis.execute_command(
            "FUNCTION LOAD", "REPLACE", LIBRARY_CODE, target_nodes=RedisCluster.PRIMARIES
        )
    else:
        await redis.function_load(LIBRARY_CODE, replace=True)


# Jobs per FCALL: large enough to amortise the client's per-command cost, small enough that
# one call does not hold the server for long (Redis runs one script at a time).
JOBS_PER_CALL = 256
# How long a batch's merges wait for REDIS_MIN_REPLICAS replicas to acknowledge them.
REPLICA_WAIT_MS = 5_000


class NotEnoughReplicas(RedisError):
    """Fewer replicas than REDIS_MIN_REPLICAS acknowledged the merges in time: not committed,
    retried (`projector.pipeline`)."""


class ProjectionStore:
    """Writes job deltas of one projection version.

    With `min_replicas`, the merges of a call are followed by `WAIT` on the same connection:
    they count as written only once that many replicas acknowledged them, so a primary that
    dies after a commit cannot take a committed event with it (CONTRACT §4)."""

    def __init__(self, redis: AnyRedis, version: str, min_replicas: int = 0) -> None:
        self.redis = redis
        self.version = version
        self._cluster = isinstance(redis, RedisCluster)
        if min_replicas and self._cluster:
            raise ValueError("REDIS_MIN_REPLICAS is not supported on a Redis Cluster")
        self._min_replicas = min_replicas

    async def merge(self, deltas: Mapping[JobRef, JobState]) -> list[int]:
        """Merge every delta, all calls in one pipelined round trip; returns the number of
        groups written per job (0: nothing changed, e.g. a redelivery).

        Raises the client's error when any merge failed: the caller must then not commit.
        """
        values = [value for state in deltas.values() for value in pack_delta(state)]
        return await self.merge_packed(list(deltas), values)

    async def merge_packed(
        self, jobs: list[JobRef], values: list[str], expire_at: list[str] | None = None
    ) -> list[int]:
        """`merge` for deltas already packed (`BatchFold.packed`): three values per job, in
        the order of `jobs`; with `expire_at` (JOB_RETENTION_SECONDS), when each job's key
        expires if its head is final, '' if not (`BatchFold.expire_at`)."""
        if not jobs:
            return []
        version = self.version
        keys = [job_key(version, tenant, job) for tenant, job in jobs]
        function, stride = MERGE_FUNCTION, 3
        if expire_at is not None:
            function, stride = MERGE_EXPIRING_FUNCTION, 4
            values = [
                value
                for index, at in enumerate(expire_at)
                for value in (*values[3 * index : 3 * index + 3], at)
            ]
        calls = self._calls(keys, values, stride)
        try:
            results = await self._fcall(function, calls)
        except ResponseError as error:
            if "function not found" not in str(error).lower():
                raise
            # Redis restarted without persistence (or was flushed): load the merge again.
            await load_functions(self.redis)
            results = await self._fcall(function, calls)
        return [written for call in results for written in call]

    async def _fcall(
        self, function: str, calls: list[tuple[list[str], list[str]]]
    ) -> list[list[int]]:
        if not self._cluster:
            return await self._fcall_packed_by_hiredis(function, calls)
        pipe: Any = self.redis.pipeline(transaction=False)
        for chunk_keys, chunk_values in calls:
            pipe.fcall(function, len(chunk_keys), *chunk_keys, *chunk_values)
        results: list[list[int]] = await pipe.execute(raise_on_error=True)
        return results

    async def _fcall_packed_by_hiredis(
        self, function: str, calls: list[tuple[list[str], list[str]]]
    ) -> list[list[int]]:
        """The same pipeline, packed by hiredis (C) and sent on a connection of the pool:
        redis-py's asyncio client packs commands in Python, about three times the cost per
        job - a tenth of the projector's time per event."""
        commands = [("FCALL", function, len(keys), *keys, *values) for keys, values in calls]
        if self._min_replicas:
            commands.append(("WAIT", self._min_replicas, REPLICA_WAIT_MS))
        payload = b"".join(
            pack_command(command)  # type: ignore[arg-type]  # the stub types a 1-tuple
            for command in commands
        )
        client: Any = self.redis
        pool = client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(payload, check_health=False)
            # Raises the first error reply; the connection is then dropped below, since
            # later replies of this payload would still be waiting on it.
            replies = [await connection.read_response() for _ in calls]
            if self._min_replicas:
                acknowledged = await connection.read_response()
                if acknowledged < self._min_replicas:
                    raise NotEnoughReplicas(
                        f"{acknowledged} of REDIS_MIN_REPLICAS={self._min_replicas} replicas "
                        f"acknowledged within {REPLICA_WAIT_MS} ms"
                    )
            return replies
        except NotEnoughReplicas:
            raise
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

    def _calls(
        self, keys: list[str], values: list[str], stride: int
    ) -> list[tuple[list[str], list[str]]]:
        if not self._cluster:
            return [
                (keys[i : i + JOBS_PER_CALL], values[stride * i : stride * (i + JOBS_PER_CALL)])
                for i in range(0, len(keys), JOBS_PER_CALL)
            ]
        # On a cluster, the keys of one call must share a slot.
        by_slot: dict[int, tuple[list[str], list[str]]] = {}
        for index, key in enumerate(keys):
            group = by_slot.setdefault(key_slot(key.encode()), ([], []))
            group[0].append(key)
            group[1].extend(values[stride * index : stride * index + stride])
        return list(by_slot.values())
