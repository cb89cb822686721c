"""Train a probe on clip_embedding from a tag under torchrun, checkpointing and resuming mid-epoch.
torchrun --nproc-per-node 2 examples/train_clip_probe.py TABLE_URI TAG CKPT [MAX_STEPS]"""
import os, sys
import torch, torch.distributed as dist
from mmfs_loader import FeatureDataset


def main() -> None:  # spawned DataLoader workers re-import this file: keep work out of import
    uri, tag, ckpt = sys.argv[1:4]
    max_steps = int(sys.argv[4]) if len(sys.argv) > 4 else None  # stop early (to show a resume)
    dist.init_process_group("gloo")
    ds = FeatureDataset(uri, tag=tag, columns=["clip_embedding", "height"], shuffle=True, seed=0, batch_size=32)
    loader = ds.dataloader(num_workers=2)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(ds.column_shape("clip_embedding")[0], 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = torch.load(ckpt) if os.path.exists(ckpt) else None
    if state:
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), loader.load_state_dict(state["data"])
    step = state["step"] if state else 0
    for epoch in range(loader.state_dict()["epoch"], 2):
        if state is None or epoch > state["data"]["epoch"]:
            loader.set_epoch(epoch)
        for batch in loader:
            target = (batch["height"] >= 720).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch["clip_embedding"]).squeeze(1), target)
            opt.zero_grad(), loss.backward(), opt.step()
            step += 1
            if dist.get_rank() == 0 and step % 5 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f}", flush=True)
            if dist.get_rank() == 0:  # every rank is at the same position: rank 0's state fits all
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "data": loader.state_dict(), "step": step}, ckpt)
            if step == max_steps:
                break
        if step == max_steps:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
