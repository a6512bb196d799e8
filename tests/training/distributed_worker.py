"""Run by ``torchrun`` in ``test_distributed.py``: each rank asks for a different config (as a plan
measured on each rank may), ``python -m torch.distributed.run ... distributed_worker.py DATA OUT``."""

import os
import sys

from test_distributed import tiny_config

from unetkit.training import train

if __name__ == "__main__":
    rank = int(os.environ["RANK"])
    config = tiny_config(sys.argv[1], sys.argv[2], **{
        "data.batch_size": 2, "data.patches_per_epoch": 4 + 4 * rank, "budget.epochs": 2,
    })
    train(config, progress_bar=False)
