"""Shared test setup. Ray must stay on the loopback interface: set before Ray is imported."""

import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TMPDIR", "/tmp/rt")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DISTMETA_BENCH_ANCHORS", os.path.join(ROOT, ".anchors"))  # `make anchors` fills it

sys.path.insert(0, ROOT)  # benchmarks/, which is not installed with the package
sys.path.insert(0, os.path.dirname(__file__))  # tests/imagesets.py: data sets in their sources' formats
