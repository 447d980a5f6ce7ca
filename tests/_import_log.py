"""What a worker process imports after it starts, for tests/test_pipeline_workers.py. Standard library
only: a worker process imports this module to unpickle its setup, before the log is in place, so anything
imported here would escape the log."""

from __future__ import annotations

import importlib
import sys


class ImportLog:
    """A finder that writes down every module a process imports from now on (it finds none itself)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(f"{name}\n")


def log_imports(path: str, probe_folder: str) -> None:
    """A worker process's setup: log what it imports after starting, and import a module of the test's
    own (which nothing can have imported before) to show that the log works."""
    sys.meta_path.insert(0, ImportLog(path))
    sys.path.insert(0, probe_folder)
    importlib.import_module("ie_import_probe")
