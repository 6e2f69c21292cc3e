"""Model deployments: options, the service, its reads and its reconcile loop.

options.py    what `model start` asks for, validated at the edge
views.py      what the service answers (DeploymentView, Endpoint)
probe.py      /health, /metrics and tokens/s, the same for every runtime
service.py    start, find, logs, stop (rows, phases, the choice of runtime)
observe.py    `model ps`: a read through the runtimes, never a write
reconcile.py  adoption and housekeeping, at start-up and on a timer
"""
