"""Imported by the worker processes' forkserver (never by the SDK itself): what every run renders with,
loaded and set up once there, so that each worker process, a fork of it, starts with it. Left to the first
run in each process, the Markdown renderer and Pillow's image plugins cost 25-35 ms of CPU per process
start (benchmarks/workers.py). Importing the pipeline stays cheap: nothing else imports this module."""

from __future__ import annotations

from .formats import load_renderers

load_renderers()
