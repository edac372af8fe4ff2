"""``python -m runtime serve``: the bundle behind an HTTP API (FastAPI on uvicorn, extra ``[serve]``).

- :mod:`runtime.serve.auth`: the bearer token (``CXR_API_TOKEN`` or a file), loopback-only start
  without one, constant-time comparison.
- :mod:`runtime.serve.batching`: concurrent requests collected into one engine call.
- :mod:`runtime.serve.scoring`: one upload -> the same verdict a triage row gives (decode, scope,
  normalise and flag rule reused from the folder runner).
- :mod:`runtime.serve.app`: the FastAPI application (``/v1/triage``, ``/v1/model``, ``/health``).
- :mod:`runtime.serve.client`: a standard-library client, and the service started as a child
  process that is waited for until it answers (tests and the load test).

Only :mod:`app` imports fastapi; ``import runtime`` never does.
"""
