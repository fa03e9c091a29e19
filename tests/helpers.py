"""Helpers shared by the test modules (pytest puts this folder on sys.path: ``from helpers import ...``)."""
from __future__ import annotations

import torch

from common.errors import run_cli


def run_main(main, argv: list[str]) -> int:
    """Run a script's ``main`` in-process as its ``__main__`` does; returns the exit status."""
    try:
        run_cli(lambda: main(argv))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def overfit(net, criterion, images, targets, steps: int, lr: float = 1e-3) -> list[float]:
    """Adam steps on one fixed batch; returns the loss of every step. One thread, so its speed stays steady while
    the other core is busy."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    threads, losses = torch.get_num_threads(), []
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            loss = criterion(net(images), targets)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    return losses
