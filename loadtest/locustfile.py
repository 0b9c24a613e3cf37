"""Locust load test of a Tether cluster: agent runs in WebSocket and HTTP modes.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --headless -u 20 -r 5 -t 5m \
        --csv results/locust/tether --tool-calls 20 --tool-output-bytes 4096
    locust -f loadtest/locustfile.py ... WebSocketAgent            # one user class
    locust -f loadtest/locustfile.py ... --tags ws                 # or by tag: ws, http, full, chained
    locust -f loadtest/locustfile.py ... --tether-shape soak --ramp-seconds 60 --soak-seconds 1800
    locust -f loadtest/locustfile.py ... --processes 4             # distributed: master + 4 workers

Users (loadtest/users/agent.py): WebSocketAgent, HttpFullContextAgent, HttpChainedAgent. Every turn is
one request event, every time to first token another (request type TTFT); `--max-error-ratio` and
`--max-p95-ttft-ms` make the run exit 1 when exceeded. Knobs: `locust -f loadtest/locustfile.py --help`.
"""

from locust import events

from loadtest.listeners import register
from loadtest.shapes import TetherShape
from loadtest.users.agent import HttpChainedAgent, HttpFullContextAgent, WebSocketAgent

__all__ = ["HttpChainedAgent", "HttpFullContextAgent", "TetherShape", "WebSocketAgent"]

register(events)
