"""A fake signer metrics endpoint: Prometheus text exposition format 0.0.4 whose counters advance.

The signer (metrics-exporter-prometheus) serves every series with the global label
``app="signer"``, counters named ``…_total`` (``blocks_observed_total{blockchain=…}``),
the ``peers_connected`` gauge and histograms. Each scrape advances the block counters by
``fake.advance`` (per chain) unless ``fake.frozen``; ``fake.peers`` sets the gauge.
``fake.body_override`` replaces the whole answer (e.g. an HTML page).
"""

from __future__ import annotations

from tests.fakes.http_base import LocalServer, Request, Response

CONTENT_TYPE = "text/plain; version=0.0.4"


class FakeMetrics(LocalServer):
    def __init__(self, peers: int = 14) -> None:
        super().__init__()
        self.peers = peers
        self.frozen = False
        self.advance = {"bitcoin": 1, "stacks": 3}
        self.observed = {"bitcoin": 1000, "stacks": 50000}
        self.app = "signer"
        self.body_override: str | None = None

    def route(self, request: Request) -> Response:
        if self.body_override is not None:
            return Response(200, self.body_override.encode(), CONTENT_TYPE)
        with self.lock:
            if not self.frozen:
                for chain, step in self.advance.items():
                    self.observed[chain] += step
            observed = dict(self.observed)
        return Response(200, self.exposition(observed).encode(), CONTENT_TYPE)

    def exposition(self, observed: dict[str, int]) -> str:
        app = f'app="{self.app}"'
        lines = [
            "# TYPE blocks_observed_total counter",
            *(
                f'blocks_observed_total{{{app},blockchain="{chain}"}} {count}'
                for chain, count in observed.items()
            ),
            "",
            "# TYPE peers_connected gauge",
            f"peers_connected{{{app}}} {self.peers}",
            "",
            "# TYPE build_info gauge",
            f'build_info{{{app},rust_version="1.84.0",revision="abc123",arch="x86_64",'
            f'env_abi="gnu"}} 1',
            "",
            "# TYPE signing_round_duration_seconds histogram",
            f'signing_round_duration_seconds_bucket{{{app},blockchain="bitcoin",le="0.5"}} 3',
            f'signing_round_duration_seconds_bucket{{{app},blockchain="bitcoin",le="+Inf"}} 4',
            f'signing_round_duration_seconds_sum{{{app},blockchain="bitcoin"}} 2.25',
            f'signing_round_duration_seconds_count{{{app},blockchain="bitcoin"}} 4',
            "",
            # The signer also emits this histogram's name as a counter
            # (transaction_coordinator.rs): parsers must tolerate it.
            "# TYPE validation_duration_seconds histogram",
            f'validation_duration_seconds_bucket{{{app},le="+Inf"}} 2',
            f"validation_duration_seconds_sum{{{app}}} 0.01",
            f"validation_duration_seconds_count{{{app}}} 2",
            "# TYPE validation_duration_seconds counter",
            f'validation_duration_seconds{{{app},blockchain="stacks"}} 7',
            "",
        ]
        return "\n".join(lines) + "\n"
