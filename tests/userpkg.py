"""A user's own research code, written by the tests into a folder outside the repository: a
model with ``nn.BatchNorm1d`` (running statistics), a constant buffer and a head called
``out``; a task family with its own loss; a rule with its own inner update. Every process
that imports ``mypkg.nets`` appends its pid and the file it imported to ``trace``, so a test
can see where each process got the code from."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

FILES = {
    "__init__.py": '"""A research project\'s own code."""\n',
    "nets.py": '''
        import os

        import torch
        from torch import nn

        with open("TRACE", "a") as _f:
            _f.write(f"{os.getpid()} {__file__}\\n")


        class Net(nn.Module):
            """BatchNorm1d with running statistics, a constant buffer, and a head called `out`."""

            def __init__(self, hidden: int = 16):
                super().__init__()
                self.features = nn.Sequential(nn.Linear(1, hidden), nn.BatchNorm1d(hidden), nn.Tanh())
                self.out = nn.Linear(hidden, 1)
                self.register_buffer("scale", torch.tensor(2.0))

            def forward(self, x):
                return self.out(self.features(x / self.scale))


        class Counting(nn.Module):
            """Changes a buffer in its forward: state the functional inner loop cannot carry."""

            def __init__(self):
                super().__init__()
                self.out = nn.Linear(1, 1)
                self.register_buffer("calls", torch.zeros(()))

            def forward(self, x):
                self.calls += 1
                return self.out(x)


        class Eager(nn.Module):
            """Reads a tensor's value in its forward: not possible under vmap."""

            def __init__(self):
                super().__init__()
                self.out = nn.Linear(1, 1)

            def forward(self, x):
                return self.out(x) * float(x.mean())
        ''',
    "losses.py": '''
        import torch.nn.functional as F


        def huber(prediction, target):
            return F.huber_loss(prediction, target.reshape(prediction.shape), delta=1.0)
        ''',
    "tasks.py": '''
        from dataclasses import dataclass

        import numpy as np
        import torch

        from distmeta.tasks import episode_rng
        from distmeta.types import EpisodeBatch


        @dataclass(frozen=True)
        class Lines:
            """y = a x + b, with a and b drawn per task."""

            shots: int = 5
            query: int = 5
            loss = "mypkg.losses:huber"

            def sample(self, n_tasks, seed, step, shard):
                rng = episode_rng(seed, step, shard)
                a = rng.uniform(-2, 2, size=(n_tasks, 1, 1))
                b = rng.uniform(-1, 1, size=(n_tasks, 1, 1))
                x = rng.uniform(-3, 3, size=(n_tasks, self.shots + self.query, 1))
                y = torch.from_numpy((a * x + b).astype(np.float32))
                x = torch.from_numpy(x.astype(np.float32))
                k = self.shots
                return EpisodeBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], self.loss)
        ''',
    "rules.py": '''
        from dataclasses import dataclass

        from distmeta.algorithms.inner import InnerState
        from distmeta.algorithms.unrolled import UnrolledRule


        @dataclass(frozen=True)
        class Decaying:
            """SGD whose rate shrinks by ``decay`` at every inner step."""

            lr: float
            decay: float = 0.5

            def init_params(self, model, params, adapted):
                return {}

            def init(self, c):
                return InnerState()

            def update(self, c, fast, grads, state):
                rate = self.lr * self.decay ** state.k
                return {n: fast[n] - rate * grads[n] for n in fast}, state.next()


        @dataclass(frozen=True)
        class DecayingMAML(UnrolledRule):
            """MAML with a decaying inner rate, through the loop like MAML."""

            decay: float = 0.5

            def base_update(self):
                return Decaying(self.inner_lr, self.decay)
        ''',
}

CONFIG = '''
name: lines
task: {family: "mypkg.tasks:Lines", shots: 5, query: 5}
model: {name: "mypkg.nets:Net", head: out, hidden: 16}
algorithm: {name: "mypkg.rules:DecayingMAML", inner_lr: 0.1, inner_steps: 2, adapt: head}
outer: {optimizer: "torch.optim:AdamW", lr: 0.01, steps: 12, optimizer_args: {betas: [0.9, 0.99]}}
runtime: {meta_batch: 8, logical_shards: 4, workers: 2}
tracking: {log_every: 4, system_metrics: false}
checkpoint: {every: 6}
eval: {episodes: 20}
'''


def forget_package() -> None:
    """Drop ``mypkg`` from this process's imported modules (another test's copy may be there)."""
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]


def write_project(root: Path) -> Path:
    """``root/mypkg/`` and ``root/config.yaml``; the import trace is ``root/trace``."""
    package = root / "mypkg"
    package.mkdir(parents=True)
    for name, text in FILES.items():
        (package / name).write_text(textwrap.dedent(text).lstrip().replace("TRACE", str(root / "trace")))
    (root / "config.yaml").write_text(CONFIG.lstrip())
    return root
