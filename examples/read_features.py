"""Read a pinned table version with mmfs_loader: selection, clips, batches, resume, recipe, a mixture.
python examples/read_features.py [TABLE_URI] [TAG_OR_VERSION]    (default: data/videos.lance, its latest version)"""
import sys

from mmfs_loader import ClipSpec, FeatureDataset, Part, Shuffle


def main() -> None:  # spawned DataLoader workers re-import this file: keep work out of import
    uri = sys.argv[1] if len(sys.argv) > 1 else "data/videos.lance"
    pin = sys.argv[2] if len(sys.argv) > 2 else None         # a tag (`mmfs snapshot create NAME`) or a version number
    tag, version = (None, int(pin)) if pin and pin.isdigit() else (pin, None)
    ds = FeatureDataset(uri, tag=tag, version=version,       # resolved once (neither: the latest): later writes never show
                        columns=["clip_embedding", "caption", "height"],   # or group names ("depth" -> float [K,H,W])
                        filter="height >= 96",               # SQL over the pinned version (Lance/DataFusion dialect)
                        shuffle=Shuffle(), seed=0,           # exact global shuffle (Shuffle(window=...) beyond memory)
                        clip=ClipSpec(frames=8, size=112, align="keyframe"),  # + frames [T,C,H,W], frame_times, clip_ok
                        batch_size=4)                        # collated batches (leave out for single samples)
    print(f"version {ds.version}: {ds.num_rows} rows selected ({ds.quarantined} quarantined left out), {len(ds)} batches")
    loader = ds.dataloader(num_workers=2)                    # a torch DataLoader (spawned workers) with a state
    for batch in loader:
        print("first batch:", {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")})
        break                                                # stop mid-epoch, as a preempted job would
    state = loader.state_dict()                              # {epoch, position, fingerprint, ...}: checkpoint it
    print("state:", {k: state[k] for k in ("epoch", "position")})
    recipe = ds.recipe()                                     # JSON; from_recipe fails clearly if the version is gone
    resumed = FeatureDataset.from_recipe(recipe).dataloader(num_workers=0)  # any number of workers
    resumed.load_state_dict(state)                           # continues exactly where the state was saved
    print(f"resumed: {sum(len(b['id']) for b in resumed)} more samples")  # then resumed.set_epoch(1): the next epoch
    mix = FeatureDataset(uri, version=ds.version, columns=["height"],
                         mixture=[Part("height >= 240", 0.5), Part("height < 240", 0.5)], samples_per_epoch=8)
    print("mixture, one epoch of heights:", sorted(int(s["height"]) for s in mix))  # small subsets repeat: upsampling


if __name__ == "__main__":
    main()
