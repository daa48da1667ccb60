"""The reference: the standard PyTorch MNIST VAE tutorial loop, written out plainly.

torchvision ``MNIST`` + ``ToTensor`` + ``DataLoader(batch_size=128, shuffle=True)``, an MLP
784-400-20 with BCE summed over pixels plus the closed-form KL, Adam 1e-3 — the loop that genvae's
speed and its test −ELBO are compared against. It reads the same MNIST files genvae caches.

    python benchmarks/tutorial_loop.py --epochs 1          # seconds per epoch
    python benchmarks/tutorial_loop.py --epochs 10         # test −ELBO after 10 epochs
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class TutorialVAE(nn.Module):
    """fc1 784→400, fc21/fc22 400→20, fc3 20→400, fc4 400→784, as in the tutorial."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def loss_function(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many steps (timing only)")
    p.add_argument("--no-test", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args()

    from genvae.data import fetch_mnist

    root = fetch_mnist().parent.parent  # torchvision expects ROOT/MNIST/raw
    torch.manual_seed(args.seed)
    train_loader = DataLoader(
        datasets.MNIST(root, train=True, download=False, transform=transforms.ToTensor()),
        batch_size=args.batch_size,
        shuffle=True,
    )
    test_loader = DataLoader(
        datasets.MNIST(root, train=False, download=False, transform=transforms.ToTensor()),
        batch_size=args.batch_size,
        shuffle=False,
    )
    model = TutorialVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    records = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0, train_loss, n = time.perf_counter(), 0.0, 0
        for step, (data, _) in enumerate(train_loader, start=1):
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            loss = loss_function(recon, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
            n += data.shape[0]
            if args.max_steps and step >= args.max_steps:
                break
        seconds = time.perf_counter() - t0
        test_loss = None
        if not args.no_test:
            model.eval()
            total = 0.0
            with torch.no_grad():
                for data, _ in test_loader:
                    recon, mu, logvar = model(data)
                    total += loss_function(recon, data, mu, logvar).item()
            test_loss = total / len(test_loader.dataset)
        records.append(
            {
                "epoch": epoch,
                "train_loss": train_loss / n,
                "test_loss": test_loss,
                "seconds": seconds,
                "images_per_second": n / seconds,
            }
        )
        if not args.json:
            print(
                f"epoch {epoch}: train {train_loss / n:.2f}  test {test_loss}  "
                f"{seconds:.2f} s  {n / seconds:,.0f} img/s"
            )
    if args.json:
        print(json.dumps(records))


if __name__ == "__main__":
    main()
