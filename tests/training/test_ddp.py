"""Two CPU processes (gloo) train a tiny generator with DDP and end with identical weights."""
import itertools
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _snapshot(trainer) -> dict:
    out = {f"G.{k}": v.detach().clone() for k, v in trainer.G.state_dict().items()}
    out.update({f"D.{k}": v.detach().clone() for k, v in trainer.D.state_dict().items()})
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD), GLOO_SOCKET_IFNAME="lo")
    from training.distributed import cleanup_distributed, make_loader, setup_distributed
    from tests.training.test_trainer import TinyScenes, tiny_trainer

    info = setup_distributed("cpu")
    torch.set_num_threads(1)
    try:
        trainer = tiny_trainer("clade", ema=True)
        assert trainer.distributed and trainer.world_size == WORLD
        init = _snapshot(trainer)
        data = TinyScenes(n=8)
        # Two manual steps: spectral-norm u/v must agree without any extra synchronisation.
        loader = make_loader(data, batch_size=2, seed=0, rank=info.rank, world_size=WORLD)
        labels = []
        for batch in itertools.islice(loader, 2):
            labels.append(batch["label"])
            trainer.train_step(batch)
        before_sync = _snapshot(trainer)
        trainer.fit(data, steps=4, out_dir=out_dir, save_every=2, progress=False)
        torch.save({"init": init, "before_sync": before_sync, "after": _snapshot(trainer),
                    "labels": torch.stack(labels)}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        cleanup_distributed()


@pytest.mark.timeout(300)
def test_two_process_gloo_ranks_hold_identical_weights(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert not torch.equal(r0["labels"], r1["labels"]), "ranks must see different samples"
    assert any(not torch.equal(r0["init"][k], r0["after"][k]) for k in r0["init"]), "no training happened"
    for k in r0["after"]:
        assert torch.equal(r0["after"][k], r1["after"][k]), f"after fit: {k} differs between ranks"
        is_bn_stat = k.endswith(("running_mean", "running_var"))
        if not is_bn_stat:  # CPU keeps per-process BatchNorm statistics until fit syncs them
            assert torch.equal(r0["before_sync"][k], r1["before_sync"][k]), f"{k} differs between ranks"
    assert any(k.endswith("weight_u") for k in r0["after"])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["world_size"] == WORLD and len(state["rng"]) == WORLD
