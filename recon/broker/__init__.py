"""Broker adapters: where snapshots come from."""

from recon.broker.alpaca import AlpacaTradingBroker
from recon.broker.protocol import Broker, RawSnapshot

__all__ = ["AlpacaTradingBroker", "Broker", "RawSnapshot"]
