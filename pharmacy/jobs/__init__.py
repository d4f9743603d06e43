"""Thin RQ entry points. Queues are separated by latency."""

DEFAULT_QUEUE = "default"
ROUTING_QUEUE = "routing"
FORECASTING_QUEUE = "forecasting"
ALL_QUEUES = (DEFAULT_QUEUE, ROUTING_QUEUE, FORECASTING_QUEUE)
