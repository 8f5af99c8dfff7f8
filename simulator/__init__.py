"""A simulated Alpaca broker: a real HTTP server speaking Alpaca's trading REST API.

Tests and the demo point alpaca-py at it with
`TradingClient(key, secret, raw_data=True, url_override=server.base_url)`.
"""

from simulator.app import create_app
from simulator.faults import Fault
from simulator.portfolio import Portfolio
from simulator.server import SimulatorServer, serve
from simulator.state import SimulatorConfig

__all__ = ["Fault", "Portfolio", "SimulatorConfig", "SimulatorServer", "create_app", "serve"]
