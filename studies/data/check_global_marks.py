"""Sanity check of the global_marks task: a small CNN versus the same CNN with one global self-attention block.

    OMP_NUM_THREADS=2 python -m studies.data.check_global_marks --epochs 4

Both models share a stride-2 conv stem and two residual conv stages (32x32 -> 16x16 -> 8x8); at 8x8 the CNN adds
one more residual conv block (~74k params) while the hybrid adds one pre-norm transformer block over the 64
tokens (no position embedding, ~50k params), so the CNN has slightly more parameters. Same data, optimiser
(AdamW, one-cycle schedule) and seed. Prints validation accuracy per epoch and wall time. It is a benchmark
script, not a test; it trains on 20 000 images, a few minutes per epoch on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from studies.data.global_marks import GlobalMarksDataModule


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.body(x))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block over all H*W positions (global mixing)."""

    def __init__(self, c: int, heads: int = 4) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        y = self.norm1(t)
        t = t + self.attn(y, y, y, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


def make_model(kind: str, width: int = 32, num_classes: int = 10) -> nn.Sequential:
    last = ResBlock(2 * width) if kind == "cnn" else AttentionBlock(2 * width)
    return nn.Sequential(conv_bn(3, width, 2), ResBlock(width), conv_bn(width, 2 * width, 2), ResBlock(2 * width),
                         last, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


def train(kind: str, dm: GlobalMarksDataModule, epochs: int, lr: float, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = make_model(kind, num_classes=dm.num_classes)
    params = sum(p.numel() for p in model.parameters())
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(train_loader), pct_start=0.1)
    start, accs = time.perf_counter(), []
    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x).argmax(1) == y).sum().item()
        accs.append(100.0 * correct / len(dm.val_set))
        print(f"{kind:>4} params={params} epoch={epoch + 1} train_loss={loss.item():.3f} "
              f"val_top1={accs[-1]:.1f}% wall={time.perf_counter() - start:.0f}s", flush=True)
    return accs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="cnn,attn")
    ap.add_argument("--train-subset", type=int, default=None)
    args = ap.parse_args()
    start = time.perf_counter()
    dm = GlobalMarksDataModule(batch_size=128, seed=args.seed, train_subset=args.train_subset)
    dm.setup("fit")
    print(f"data: {len(dm.train_set)} train / {len(dm.val_set)} val images in {time.perf_counter() - start:.1f}s "
          f"(threads={torch.get_num_threads()})", flush=True)
    for kind in args.models.split(","):
        train(kind, dm, args.epochs, args.lr, args.seed)


if __name__ == "__main__":
    main()
