"""A user's own training script on Crescendo: its own model, Dataset, loss and evaluation.

Run it as the job's `script` (examples/user-script.yaml), or by hand under torchrun:
    torchrun --nnodes=1:2 ... examples/user_script.py --config examples/user-script.yaml
Crescendo chooses the global batch (the job's policy), this rank's micro-batches, the learning
rate's scaling with the batch, and checkpoints what is tracked; the rest is plain PyTorch.
"""

import torch
from crescendo_trainer import Job, launch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset


class Digits(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """scikit-learn's 8×8 digits: even rows train, odd rows test."""

    def __init__(self, train: bool) -> None:
        images, labels = load_digits(return_X_y=True)
        rows = slice(0, None, 2) if train else slice(1, None, 2)
        self.x = torch.tensor(images[rows] / 16.0, dtype=torch.float32)
        self.y = torch.tensor(labels[rows], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def main(job: Job) -> None:
    model = nn.Sequential(nn.Linear(64, 96), nn.Tanh(), nn.Linear(96, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.8)
    job.track(model=model, optimizer=optimizer, scheduler=scheduler)
    ddp = job.distribute(model)
    job.loader(Digits(train=True), num_workers=1)
    test = Digits(train=False)

    @torch.no_grad()
    def accuracy() -> dict[str, float]:
        predicted = model(test.x.to(job.device)).argmax(dim=1).cpu()
        return {"accuracy": float((predicted == test.y).float().mean())}

    job.evaluate_with(accuracy)
    while job.running:
        for x, y in job.micro_batches():
            job.backward(functional.cross_entropy(ddp(x), y))
        job.step(optimizer)
        scheduler.step()


if __name__ == "__main__":
    launch(main)
