"""fit's training loops timed for two source trees of genvae, alternately, in fresh processes.

    python benchmarks/compare_trees.py OLD_SRC NEW_SRC [--rounds 3] [--threads 2] [--json FILE]

For a change that touches the training step: check out the previous commit beside this one
(``git worktree add ../base HEAD~1``) and pass both ``src`` folders. Each round runs, for each tree
in turn, a fresh process that imports genvae from that tree and trains the MLP VAE 784-400-20 on
MNIST at batch 128 for 3 epochs with ``fit`` eager and ``fit(compile=True)``; the figure is the
median images/s of the epochs after the first. Reported: each tree's median over rounds and the
per-round ratios new/old (the pair runs back to back, so drift in the machine's speed cancels
best in these).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

LOOPS = {"eager": {}, "compile": {"compile": True}}


def child(src: str, threads: int) -> None:
    sys.path.insert(0, src)
    import torch

    import genvae
    from genvae import VAE
    from genvae.data import load_mnist
    from genvae.likelihoods import Bernoulli
    from genvae.nets import MLPDecoder, MLPEncoder
    from genvae.priors import StandardNormal
    from genvae.train import fit

    if not genvae.__file__.startswith(src):
        raise SystemExit(f"expected genvae from {src}, got {genvae.__file__}")
    torch.set_num_threads(threads)
    train = load_mnist("train")
    out = {}
    for name, options in LOOPS.items():
        torch.manual_seed(0)
        model = VAE(MLPEncoder((1, 28, 28), 20), MLPDecoder(20, (1, 28, 28)), Bernoulli(), StandardNormal(20))
        history = fit(model, train, epochs=3, batch_size=128, device="cpu", progress=False, **options).history
        out[name] = statistics.median(s.images_per_second for s in history[1:])
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the runs and medians to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.new, args.threads)
        return
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
            src = args.old if side == "old" else args.new
            cmd = [sys.executable, __file__, "-", src, "--child", "--threads", str(args.threads)]
            line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            runs[side].append(json.loads(line))
            print(side, runs[side][-1], flush=True)
    print("| loop | old img/s | new img/s | new/old (medians) | new/old per round |\n|---|---|---|---|---|")
    if args.json is not None:
        medians = {side: {loop: statistics.median(r[loop] for r in runs[side]) for loop in LOOPS} for side in runs}
        record = {"old": args.old, "new": args.new, "threads": args.threads, "runs": runs, "medians": medians}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    for loop in LOOPS:
        old = [r[loop] for r in runs["old"]]
        new = [r[loop] for r in runs["new"]]
        ratios = ", ".join(f"{n / o:.2f}" for o, n in zip(old, new))
        print(
            f"| {loop} | {statistics.median(old):,.0f} | {statistics.median(new):,.0f} | "
            f"{statistics.median(new) / statistics.median(old):.3f} | {ratios} |"
        )


if __name__ == "__main__":
    main()
