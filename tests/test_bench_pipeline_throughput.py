"""benchmarks/pipeline_throughput.py sets up against the real backend: it follows exactly the pool's
connections on the wire, not the one-off probe PostgresBackend makes before opening its pool."""

from __future__ import annotations

import uuid

# The module, not its functions: a module-level name `setup` is a setup hook to older pytest (nose style).
from benchmarks import pipeline_throughput as bench


def test_the_benchmark_traces_the_pools_connections_and_counts_their_traffic(server_url: str) -> None:
    state = bench.setup(server_url, quick=True)
    try:
        assert len(state.wire.traced) == bench.POOL_SIZE
        assert not any(traced.conn.closed for traced in state.wire.traced)
        state.wire.take()  # what setup itself sent
        state.client.users.create(email=f"bench-{uuid.uuid4().hex[:12]}@example.test")
        wire = state.wire.take()
        assert (wire.transactions, wire.round_trips) == (1, 1)  # one call: one transaction, one round trip
    finally:
        bench.teardown(state)
