"""OpenAI's Responses API, spoken by streamq: requests, their chat equivalents, the typed events
a job's stream reads as, and the stored responses ``previous_response_id`` builds on.

Pure except for :mod:`streamq.responses.store`; used by the client, the worker and the gateway.
"""
