"""CUDA workers: skipped, with the reason, where torch sees no GPU."""

import pytest
import torch

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


def test_one_and_two_cuda_workers_give_the_same_bits():
    from rich.console import Console

    from benchmarks.gpu import run

    result = run(quick=True, console=Console())
    assert result["one_vs_two"]["bitwise_equal"]
    assert result["in_process"]["peak_memory_mb"] > 0
