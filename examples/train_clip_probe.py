"""Train a probe on clip_embedding from a tag under torchrun, checkpointing and resuming mid-epoch.
torchrun --nproc-per-node 2 examples/train_clip_probe.py TABLE_URI TAG CKPT [MAX_STEPS]
Rank 0 prints progress and saves CKPT after every step; run the same command again to resume from it."""
import os
import sys

import torch
import torch.distributed as dist

from mmfs_loader import FeatureDataset

EPOCHS, BATCH = 2, 32


def main() -> None:  # spawned DataLoader workers re-import this file: keep work out of import
    uri, tag, ckpt = sys.argv[1:4]
    max_steps = int(sys.argv[4]) if len(sys.argv) > 4 else None  # stop early (to show a resume)
    dist.init_process_group("gloo")
    rank0 = dist.get_rank() == 0
    ds = FeatureDataset(uri, tag=tag, columns=["clip_embedding", "height"], shuffle=True, seed=0, batch_size=BATCH)
    loader = ds.dataloader(num_workers=2)  # a torch DataLoader that counts what it hands out: state_dict()
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(ds.column_shape("clip_embedding")[0], 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = torch.load(ckpt) if os.path.exists(ckpt) else None
    if state:
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), loader.load_state_dict(state["data"])
    step = state["step"] if state else 0
    per_epoch = len(ds)  # steps per epoch (every rank takes the same number)
    every = max(1, per_epoch // 10)  # about 10 lines per epoch; a line per step when the epoch is short
    if rank0:
        os.makedirs(os.path.dirname(os.path.abspath(ckpt)), exist_ok=True)
        where = f"resuming at step {step} (epoch {state['data']['epoch']}, sample {state['data']['position']})" if state else "starting"
        print(f"{ds.num_rows} rows of {tag} (version {ds.version}) on {dist.get_world_size()} ranks: "
              f"{per_epoch} steps of {BATCH} per rank and epoch; {where}", flush=True)
    for epoch in range(loader.state_dict()["epoch"], EPOCHS):
        if state is None or epoch > state["data"]["epoch"]:
            loader.set_epoch(epoch)
        losses, samples = [], 0
        for batch in loader:
            target = (batch["height"] >= 720).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch["clip_embedding"]).squeeze(1), target)
            opt.zero_grad(), loss.backward(), opt.step()
            step, samples = step + 1, samples + len(batch["id"])
            losses.append(loss.item())
            if rank0:  # every rank is at the same position: rank 0's state fits all
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "data": loader.state_dict(), "step": step}, ckpt + ".tmp")
                os.replace(ckpt + ".tmp", ckpt)  # a job killed while saving keeps the previous checkpoint
                k = -(-loader.state_dict()["position"] // BATCH)  # this epoch's step
                if k % every == 0 or k == per_epoch:
                    print(f"epoch {epoch} step {k}/{per_epoch} (global step {step}) loss {losses[-1]:.4f}", flush=True)
            if step == max_steps:
                break
        if rank0 and losses:
            print(f"epoch {epoch} {'stopped' if step == max_steps else 'done'}: {len(losses)} steps ({samples} samples per rank) "
                  f"in this run, mean loss {sum(losses) / len(losses):.4f} (rank 0)", flush=True)
        if step == max_steps:
            if rank0:
                print(f"stopped at step {step} (MAX_STEPS); checkpoint {ckpt}: run without MAX_STEPS to resume", flush=True)
            break
    else:
        if rank0:
            print(f"done: {step} steps, checkpoint {ckpt}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
