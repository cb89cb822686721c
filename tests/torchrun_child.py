"""Run under ``torchrun --nproc-per-node 2``: read an epoch through spawned workers, stopping halfway
to save the state, resuming in a fresh dataset with another worker count; write what this rank saw."""

import json
import sys

import torch.distributed as dist

from mmfs_loader import FeatureDataset


def main() -> None:  # spawned DataLoader workers re-import this file: keep work out of import
    uri, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    kw = dict(tag="snap-1", columns=["clip_embedding", "height"], shuffle=True, seed=4, batch_size=16)
    ds = FeatureDataset(uri, **kw)  # rank and world size come from torch.distributed
    ds.set_epoch(1)
    loader = ds.dataloader(num_workers=2)
    seen = []
    for k, b in enumerate(loader):
        seen += b["id"]
        if k == 4:
            break
    state = loader.state_dict()
    fresh = FeatureDataset(uri, **kw)
    fresh.load_state_dict(json.loads(json.dumps(state)))
    seen += [i for b in fresh.dataloader(num_workers=1) for i in b["id"]]
    ref = FeatureDataset(uri, **kw)
    ref.set_epoch(1)
    expected = [i for b in ref for i in b["id"]]
    with open(f"{out}/rank{dist.get_rank()}.json", "w") as f:
        json.dump({"rank": ds.rank, "world": ds.world_size, "seen": seen, "expected": expected, "state": state}, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
