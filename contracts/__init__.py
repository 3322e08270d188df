"""The wire contract of the job read model: what producers, readers and operators rely on.

`contracts.events` is the Kafka event envelope v1, `contracts.job_state` the stored job and its
Redis encoding, `contracts.http` the HTTP bodies. Only `contracts.publisher` (Kafka) and
`contracts.redis_client` (a server or cluster client for `REDIS_URL`) do I/O.
"""

from contracts.events import JobEvent, StorageArtifact
from contracts.http import ErrorBody, JobResponse

__all__ = ["ErrorBody", "JobEvent", "JobResponse", "StorageArtifact"]
