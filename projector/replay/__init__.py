"""Replay tooling: rebuild a projection version beside the live one, verify it, promote it,
roll back, drop a retired version, repair one job (DESIGN "Versioned projections and
rebuilds"). `python -m projector replay --help` lists the commands; `cli.py` wires them.

- `topic.py`    what the broker knows: partitions, end offsets, a group's committed offsets
                and lag, the partition of a key;
- `versions.py` what Redis holds: versions, their job keys, the active and previous version;
- `progress.py` progress on a terminal (a bar per row) or in a log (plain lines);
- one module per command: `build`, `status`, `verify`, `promote` (and rollback), `drop`,
  `repair` (the `job` command).
"""
