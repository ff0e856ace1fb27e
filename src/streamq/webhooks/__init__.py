"""Signed webhooks when a job or response ends (Standard Webhooks, as OpenAI signs its own).

``signing.py`` (the headers), ``bodies.py`` (what is posted), ``endpoints.py`` (where, from the
operator's settings only), ``queue.py`` (the durable deliveries in Redis) and ``delivery.py``
(the worker's loop that claims, posts and retries them).
"""

from streamq.webhooks.delivery import WebhookDelivery
from streamq.webhooks.queue import delivery_status

__all__ = ["WebhookDelivery", "delivery_status"]
