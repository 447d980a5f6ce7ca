"""benchmarks/pipeline_throughput.py sets up against the real backend: it follows exactly the pool's
connections on the wire, not the one-off probe PostgresBackend makes before opening its pool."""

from __future__ import annotations

import uuid

from benchmarks.pipeline_throughput import POOL_SIZE, setup, teardown


def test_the_benchmark_traces_the_pools_connections_and_counts_their_traffic(server_url: str) -> None:
    state = setup(server_url, quick=True)
    try:
        assert len(state.wire.traced) == POOL_SIZE
        assert not any(traced.conn.closed for traced in state.wire.traced)
        state.wire.take()  # what setup itself sent
        state.client.users.create(email=f"bench-{uuid.uuid4().hex[:12]}@example.test")
        wire = state.wire.take()
        assert (wire.transactions, wire.round_trips) == (1, 1)  # one call: one transaction, one round trip
    finally:
        teardown(state)
