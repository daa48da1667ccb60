"""Run by test_train.py under torchrun: each rank trains the same model on its shard."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from genvae import ELBO, VAE, DReG
from genvae.data import synthetic_digits
from genvae.likelihoods import Bernoulli
from genvae.nets import MLPDecoder, MLPEncoder
from genvae.priors import StandardNormal
from genvae.train import fit

out = Path(sys.argv[1])
objective = {"elbo": ELBO(), "dreg": DReG(3)}[sys.argv[2] if len(sys.argv) > 2 else "elbo"]
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
model = VAE(
    MLPEncoder((1, 28, 28), 4, hidden=(32,)), MLPDecoder(4, (1, 28, 28), hidden=(32,)), Bernoulli(), StandardNormal(4)
)
if rank == 0:
    torch.save(model.state_dict(), out / "init.pt")
fit(
    model,
    synthetic_digits(256, seed=0),
    epochs=3,
    objective=objective,
    batch_size=32,
    device="cpu",
    out=out / "run",
    progress=False,
)
torch.save(model.state_dict(), out / f"rank{rank}.pt")
dist.destroy_process_group()
