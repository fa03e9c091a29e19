"""Helpers shared by the test modules (pytest puts this folder on sys.path: ``from helpers import ...``)."""
from __future__ import annotations

import torch

from common.errors import run_cli

# Problem 2's specified pair at one seed on the quick data: two runs (1 and 2 epochs) and their pair evaluation.
P2_PAIR_STUDY = ["--quick", "--quick-images", "16", "8", "--quick-epochs", "1", "2", "--only", "p2", "--experiments",
                 "p2-heatmap", "p2-regression", "--seeds", "1", "--device", "cpu", "--no-bench",
                 "--run-figures", "none"]  # the tests on it compare numbers; drawing would be half their time


def run_main(main, argv: list[str]) -> int:
    """Run a script's ``main`` in-process as its ``__main__`` does; returns the exit status."""
    try:
        run_cli(lambda: main(argv))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def run_script_here(capsys, script: str, *args: str):
    """``python SCRIPT ARGS`` in this process (``script`` as ``problem1/train.py``): its exit status, stdout and
    stderr, as a ``subprocess.CompletedProcess``. The code path of the command line without starting Python and
    importing torch again; the tests that are about the process itself (signals, exit status of a real process,
    torchrun) start one."""
    import importlib
    import subprocess
    import warnings

    module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # a real process prints them to stderr: so do we
        warnings.simplefilter("default")
        code = run_main(module.main, list(args))
    out, err = capsys.readouterr()
    err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return subprocess.CompletedProcess([script, *args], code, out, err)


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
