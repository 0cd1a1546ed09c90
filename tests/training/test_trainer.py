"""The GAN trainer on tiny networks: it learns, resumes exactly, refuses bad data, stops on NaN."""
import copy
import json
import math

import pytest
import torch
from torch.utils.data import Dataset, default_collate

from models import build_generator_from_config, load_generator_dir, load_official_checkpoint
from models.presets import generator_config
from training.batch_norm_stats import estimate_batch_norm
from training.checkpoint_store import match_state_layouts, previous_checkpoint
from training.recipe import TrainRecipe, discriminator_config_for
from training.trainer import NonFiniteLossError, Trainer
from models.fast import native_bf16
from training.vgg import VGG19_FILE, VGGWeightsMissingError

LABEL_NC, SIZE = 3, 32


class TinyScenes(Dataset):
    """Random label maps in the dataset dict format (dontcare = LABEL_NC), fixed per index."""

    def __init__(self, n=6, bad_index=None, bad_value=12, nan=False):
        self.n, self.bad_index, self.bad_value, self.nan = n, bad_index, bad_value, nan

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        # Blocky labels so that class and image correlate: image colour = f(class).
        label = torch.randint(0, LABEL_NC + 1, (1, 4, 4), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
        if i == self.bad_index:
            label[0, 5, 7] = self.bad_value
        image = (label.float() / LABEL_NC * 2 - 1).expand(3, -1, -1).clone()
        if self.nan:
            image[:] = float("nan")
        return {"label": label, "instance": label.clone(), "image": image,
                "dist": torch.rand(2, SIZE, SIZE, generator=g) * 2 - 1, "path": f"scene_{i:03d}.png"}


def tiny_trainer(norm="clade", device="cpu", **recipe):
    cfg = generator_config("custom", norm, label_nc=LABEL_NC, contain_dontcare_label=True, ngf=4,
                           crop_size=SIZE, **recipe.pop("g", {}))
    # fp32 unless a test asks for bf16: the exactness tests below compare fp32 arithmetic.
    recipe = TrainRecipe(**{"use_vgg": False, "batch_size": 2, "amp": False, **recipe})
    return Trainer(g_config=cfg, d_config=discriminator_config_for(cfg, ndf=8, n_layers_D=3),
                   recipe=recipe, device=device)



def _tensors(trainer):
    state = trainer.state_dict()
    out = {}
    for part in ("G", "D", "E", "G_ema"):
        for k, v in (state[part] or {}).items():
            out[f"{part}.{k}"] = v
    for part in ("opt_G", "opt_D"):
        for pid, s in state[part]["state"].items():
            for k, v in s.items():
                out[f"{part}.{pid}.{k}"] = v
    return out


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
def test_each_generator_trains(norm, tmp_path):
    trainer = tiny_trainer(norm)
    before = {k: v.clone() for k, v in trainer.G.named_parameters()}
    d_before = {k: v.clone() for k, v in trainer.D.named_parameters()}
    history = trainer.fit(TinyScenes(), steps=3, out_dir=tmp_path, log_every=1, save_every=3,
                          sample_every=3, progress=False)
    assert trainer.step == 3 and len(history) == 3
    for row in history:
        for key in ("GAN", "GAN_Feat", "D_Fake", "D_real"):
            assert math.isfinite(row[key]), (key, row)
    changed = [k for k, v in trainer.G.named_parameters() if not torch.equal(v, before[k])]
    # At 1x1 (head_0 of a 32-pixel generator) the edge map is all zero: inst_conv gets no gradient.
    unchanged = set(before) - set(changed)
    assert all(".inst_conv." in k for k in unchanged), unchanged
    assert any(k.startswith("up_3.norm_0.") for k in changed)
    assert all(not torch.equal(v, d_before[k]) for k, v in trainer.D.named_parameters())
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "log.csv").is_file()
    assert (tmp_path / "samples" / "step_0000003.png").is_file()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["lr_G"] == 1e-4 and rows[0]["lr_D"] == 4e-4


def test_step_losses_and_learning_rates_are_official():
    trainer = tiny_trainer("clade")
    assert trainer.opt_G.defaults["betas"] == (0.0, 0.9)
    batch = torch.utils.data.default_collate([TinyScenes()[i] for i in range(2)])
    losses = trainer.train_step(batch)
    assert set(losses) == {"GAN", "GAN_Feat", "D_Fake", "D_real", "img_L1"}
    assert all(p.grad is not None for p in trainer.D.parameters())  # from the D step only
    recipe = TrainRecipe(niter=2, niter_decay=4)
    assert [recipe.lr_factor(step=0, epoch=e) for e in (0, 2, 3, 5, 6, 9)] == [1, 1, 0.75, 0.25, 0, 0]
    assert TrainRecipe(decay_start_step=10, decay_steps=10).lr_factor(step=15, epoch=0) == 0.5
    assert TrainRecipe(ttur=False).betas == (0.5, 0.999)


@pytest.mark.parametrize("norm,extra", [("clade-icpe", {"ema": True}),
                                        ("spade", {"g": {"use_vae": True, "z_dim": 8}})])
def test_resume_two_plus_two_equals_four(norm, extra, tmp_path):
    straight = tiny_trainer(norm, **dict(extra, g=dict(extra.get("g", {}))))
    straight.fit(TinyScenes(), steps=4, progress=False)

    first = tiny_trainer(norm, **dict(extra, g=dict(extra.get("g", {}))))
    first.fit(TinyScenes(), steps=2, out_dir=tmp_path, save_every=2, progress=False)
    torch.manual_seed(1234)  # whatever happens in between must not matter
    resumed = tiny_trainer(norm, **dict(extra, g=dict(extra.get("g", {}))))
    resumed.load_checkpoint(tmp_path)
    assert (resumed.step, resumed.epoch, resumed.epoch_batch) == (2, 0, 2)
    resumed.fit(TinyScenes(), steps=4, out_dir=tmp_path, progress=False)

    a, b = _tensors(straight), _tensors(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert (resumed.epoch, resumed.epoch_batch) == (1, 1)  # 3 batches per epoch
    log_steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log_steps == [2, 4]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = tiny_trainer("clade")
    trainer.fit(TinyScenes(), steps=2, out_dir=tmp_path, save_every=1, progress=False)
    good = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    with pytest.raises(NonFiniteLossError, match=r"at step 3: GAN_Feat=nan"):
        trainer.fit(TinyScenes(nan=True), steps=4, out_dir=tmp_path, save_every=1, progress=False)
    kept = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert kept["step"] == 2 and previous_checkpoint(tmp_path / "checkpoint.pt").is_file()
    assert all(torch.equal(v, good["G"][k]) for k, v in kept["G"].items())
    assert all(torch.isfinite(v).all() for v in kept["G"].values() if v.is_floating_point())


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    trainer = tiny_trainer("clade")
    trainer.fit(TinyScenes(), steps=2, out_dir=tmp_path, save_every=1, progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"killed while writing")
    resumed = tiny_trainer("clade")
    assert resumed.load_checkpoint(tmp_path).name == "checkpoint.prev.pt"
    assert resumed.step == 1


def test_bad_label_is_rejected_before_the_first_step():
    trainer = tiny_trainer("clade")
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    with pytest.raises(ValueError, match=r"scene_004\.png.*\[12\]"):
        trainer.fit(TinyScenes(bad_index=4), steps=2, progress=False)
    assert trainer.step == 0
    assert all(torch.equal(v, before[k]) for k, v in trainer.G.state_dict().items())


def test_export_round_trip(tmp_path):
    trainer = tiny_trainer("clade-icpe", ema=True)
    trainer.fit(TinyScenes(), steps=2, progress=False)
    folder = trainer.export_generator(tmp_path / "gen")
    loaded = load_generator_dir(folder)
    assert loaded.config == trainer.g_config
    for k, v in trainer.G_ema.state_dict().items():  # EMA weights are the exported ones
        assert torch.equal(v, loaded.state_dict()[k]), k
    fresh = build_generator_from_config(trainer.g_config)
    load_official_checkpoint(fresh, folder / "latest_net_G.pth")


def test_missing_vgg_weights_fail_naming_the_file(tmp_path):
    cfg = generator_config("custom", "clade", label_nc=LABEL_NC, ngf=4, crop_size=SIZE)
    with pytest.raises(VGGWeightsMissingError, match=VGG19_FILE):
        Trainer(g_config=cfg, recipe=TrainRecipe(use_vgg=True), vgg_weights=tmp_path / VGG19_FILE)


def test_train_cli_dry_run_prints_options(capsys, tmp_path):
    from cli import train
    code = train.main(["--preset", "synthetic", "--norm", "spade", "--spade_kernel_size", "1", "--ngf", "8",
                       "--steps", "5", "--no-vgg", "--set", "lambda_feat=5", "--out", str(tmp_path), "--dry-run",
                       "--no-spectral-input-scaling"])
    assert code == 0
    options = json.loads(capsys.readouterr().out)
    assert options["recipe"]["spectral_input_scaling"] is False
    assert options["generator"]["spade_kernel_size"] == 1 and options["generator"]["ngf"] == 8
    assert options["recipe"]["lambda_feat"] == 5 and options["recipe"]["use_vgg"] is False
    assert options["run"]["steps"] == 5 and not list(tmp_path.iterdir())  # nothing written


def test_train_cli_runs_and_resumes(tmp_path, monkeypatch):
    from cli import train
    monkeypatch.setattr(train, "build_dataset", lambda options: TinyScenes())
    common = ["--preset", "custom", "--label_nc", str(LABEL_NC), "--contain_dontcare_label", "--crop_size", str(SIZE), "--ngf", "4",
              "--ndf", "8", "--n_layers_D", "3", "--batch-size", "2", "--no-vgg", "--out", str(tmp_path),
              "--num-workers", "0", "--no-progress", "--save-every", "1"]
    (tmp_path / "data" / "instances").mkdir(parents=True)  # custom root with instances (samples: TinyScenes)
    common += ["--dataroot", str(tmp_path / "data")]
    assert train.main(common + ["--norm", "clade", "--steps", "1"]) == 0
    run = tmp_path / "00001-custom-clade"
    options = json.loads((run / "options.json").read_text())
    assert options["run"]["effective_batch_size"] == 2 and options["generator"]["ngf"] == 4
    assert (run / "generator" / "latest_net_G.pth").is_file()
    assert train.main(common + ["--norm", "clade", "--steps", "2", "--resume"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (tmp_path / "00002-custom-clade").exists()


def test_time_cap_stops_early_with_a_checkpoint(tmp_path):
    trainer = tiny_trainer("clade")
    trainer.fit(TinyScenes(), steps=50, out_dir=tmp_path, max_seconds=0.0, progress=False)
    assert trainer.stopped_early and trainer.step == 1
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 1


def test_synthetic_scenes_with_too_few_classes_are_rejected():
    from data.synthetic import SyntheticScenes
    trainer = tiny_trainer("clade")  # label_nc 3 + dontcare: the scenes have 8 + dontcare
    scenes = SyntheticScenes(4, size=SIZE, with_dist=False)
    with pytest.raises(ValueError, match=r"synthetic/seed0/00000000.*class ids \[\d"):
        trainer.fit(scenes, steps=1, progress=False)
    assert trainer.step == 0


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "train.py", "--preset", "synthetic", "--norm", "clade", "--ngf", "4", "--ndf", "8",
           "--crop_size", "32", "--batch-size", "2", "--num-samples", "64", "--no-vgg", "--device", "cpu",
           "--out", str(tmp_path), "--num-workers", "0", "--save-every", "2", "--no-progress"]
    proc = subprocess.Popen(cmd + ["--steps", "1000"], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "00001-synthetic-clade" / "checkpoint.pt"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not checkpoint.with_name("checkpoint.prev.pt").exists():
            time.sleep(0.5)
    finally:
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait()
    saved = torch.load(checkpoint, weights_only=True)["step"]
    assert saved >= 4
    done = subprocess.run(cmd + ["--steps", str(saved + 2), "--resume"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(checkpoint, weights_only=True)["step"] == saved + 2
    rows = [json.loads(line)["step"] for line in checkpoint.with_name("log.jsonl").read_text().splitlines()]
    assert rows == sorted(set(rows)) and rows[-1] == saved + 2


def test_channels_last_trains_like_contiguous():
    batch = torch.utils.data.default_collate([TinyScenes()[i] for i in range(2)])
    plain = tiny_trainer("spade", channels_last=False).train_step(batch)
    nhwc = tiny_trainer("spade", channels_last=True).train_step(batch)
    assert plain.keys() == nhwc.keys()
    assert all(abs(plain[k] - nhwc[k]) < 1e-3 * max(1.0, abs(plain[k])) for k in plain), (plain, nhwc)


def test_resuming_in_another_memory_layout_keeps_adam_exact():
    batch = torch.utils.data.default_collate([TinyScenes()[i] for i in range(2)])
    nhwc = tiny_trainer("spade", channels_last=True)
    nhwc.train_step(batch)
    plain = tiny_trainer("spade", channels_last=False)
    plain.load_state_dict(copy.deepcopy(nhwc.state_dict()))
    for optimizer in (plain.opt_G, plain.opt_D):
        for param, state in optimizer.state.items():
            assert state["exp_avg"].stride() == param.stride() and state["exp_avg_sq"].stride() == param.stride()
    # What the layouts decide: one fused Adam step from channels_last state on a contiguous parameter.
    gen = torch.Generator().manual_seed(0)
    start, grad = torch.randn(8, 4, 3, 3, generator=gen), torch.randn(8, 4, 3, 3, generator=gen)
    to_nhwc = dict(memory_format=torch.channels_last)
    saved = torch.nn.Parameter(start.contiguous(**to_nhwc))
    saved_opt = torch.optim.Adam([saved], lr=0.1, fused=True)
    saved.grad = grad.contiguous(**to_nhwc)
    saved_opt.step()
    resumed = torch.nn.Parameter(saved.detach().contiguous())
    resumed_opt = torch.optim.Adam([resumed], lr=0.1, fused=True)
    resumed_opt.load_state_dict(copy.deepcopy(saved_opt.state_dict()))   # as from a file: no shared state
    match_state_layouts(resumed_opt)
    resumed.grad, saved.grad = grad.clone(), grad.contiguous(**to_nhwc)
    resumed_opt.step(), saved_opt.step()
    assert torch.allclose(resumed.detach(), saved.detach(), atol=1e-6)


def test_spectral_input_scaling_trains_like_the_official_division():
    from models.spectral import InputScaledSpectralNorm
    batch = torch.utils.data.default_collate([TinyScenes()[i] for i in range(2)])
    official, scaled = tiny_trainer("clade", spectral_input_scaling=False), tiny_trainer("clade")
    for trainer, enabled in ((official, False), (scaled, True)):
        hooks = [h for net in trainer.networks().values() for m in net.modules()
                 for h in m._forward_pre_hooks.values() if isinstance(h, InputScaledSpectralNorm)]
        assert hooks and {h.input_scaling for h in hooks} == {enabled}
    for _ in range(3):
        a, b = official.train_step(batch), scaled.train_step(batch)
        assert all(abs(a[k] - b[k]) < 1e-4 * max(1.0, abs(a[k])) for k in a), (a, b)


@pytest.mark.slow
def test_compiled_training_matches_eager():
    batch = torch.utils.data.default_collate([TinyScenes()[i] for i in range(2)])
    eager = tiny_trainer("clade").train_step(batch)
    compiled = tiny_trainer("clade", compile=True).train_step(batch)
    assert all(abs(eager[k] - compiled[k]) < 1e-3 * max(1.0, abs(eager[k])) for k in eager), (eager, compiled)


def test_run_analysis_train_stage_writes_checkpoints_tables_and_figure(tmp_path):
    from analysis.context import RunContext
    from analysis.stages import train as stage

    from analysis.options import TrainOptions

    ctx = RunContext(out=tmp_path, quick=True, train=TrainOptions(steps=2, ngf=4, ndf=8, batch_size=2, crop_size=SIZE,
                                                                 seeds=1, kernel_variants=False, mask_factor=1))
    summary = stage.run(ctx).record()
    assert summary["vgg"].startswith(("off (weights not found)", "on"))
    for norm in ("spade", "clade", "clade-icpe"):
        G = load_generator_dir(ctx.checkpoint_dir(norm))
        assert G.config.norm == norm and G.config.ngf == 4
        assert (tmp_path / "tables" / f"train_log_{norm}.csv").is_file()
    import pandas as pd
    table = pd.read_csv(tmp_path / "tables" / "training.csv")
    assert list(table["norm"]) == ["spade", "clade", "clade-icpe"] and (table["steps"] == 2).all()
    assert {"seconds", "images_per_s", "GAN_Feat_end", "vgg"} <= set(table.columns)
    for item in summary["figures"] + summary["tables"]:
        assert (tmp_path / item["file"]).is_file() and item["caption"]


def test_stage_time_cap_gives_later_methods_the_same_steps(tmp_path):
    from analysis.context import RunContext
    from analysis.stages import train as stage

    from analysis.options import TrainOptions

    options = TrainOptions(steps=50, ngf=4, ndf=8, batch_size=2, crop_size=SIZE, max_seconds=1e-9,
                           norms=("clade", "clade-icpe"), seeds=1, kernel_variants=False, mask_factor=1)
    summary = stage.run(RunContext(out=tmp_path, quick=True, train=options)).record()
    assert summary["steps"] == 1
    assert [r["steps"] for r in summary["results"]] == [1, 1]
    assert summary["results"][0]["stopped_by_time_cap"] and summary["results"][0]["planned_steps"] == 50


def test_train_one_trains_a_named_variant_under_the_same_recipe(tmp_path):
    from analysis.context import RunContext
    from analysis.stages import train as stage

    from analysis.options import TrainOptions

    ctx = RunContext(out=tmp_path, quick=True, train=TrainOptions(steps=2, ngf=4, ndf=8, batch_size=2, crop_size=SIZE))
    result = stage.train_one(ctx, "spade", stage.settings(ctx), False, None, name="spade-1x1",
                             overrides={"spade_kernel_size": 1})
    G = load_generator_dir(ctx.checkpoint_dir("spade-1x1"))
    assert (G.config.norm, G.config.spade_kernel_size, G.config.ngf) == ("spade", 1, 4)
    assert result["row"]["run"] == "spade-1x1" and result["row"]["steps"] == 2
    assert (tmp_path / "tables" / "train_log_spade-1x1.csv").is_file() and (tmp_path / "train" / "spade-1x1").is_dir()
    assert not ctx.checkpoint_dir("spade").exists()


@pytest.mark.skipif(not native_bf16("cpu"), reason="this CPU has no native bf16 (AMX / AVX512-BF16)")
def test_bf16_autocast_on_cpu_trains_close_to_fp32():
    batch = torch.utils.data.default_collate([TinyScenes()[i] for i in range(2)])
    fp32, bf16 = tiny_trainer("clade-icpe"), tiny_trainer("clade-icpe", amp=True)
    assert not fp32.use_amp and bf16.use_amp
    first = fp32.train_step(batch), bf16.train_step(batch)   # same weights and batch: same losses, rounded
    assert all(abs(first[0][k] - first[1][k]) < 5e-2 * max(1.0, abs(first[0][k])) for k in first[0]), first
    before = {k: v.clone() for k, v in bf16.G.named_parameters()}
    bf16.train_step(batch)
    assert all(p.dtype == torch.float32 for p in bf16.G.parameters())   # master weights stay fp32
    assert not torch.equal(bf16.G.up_3.conv_1.weight_orig, before["up_3.conv_1.weight_orig"])


def test_on_step_runs_every_k_steps_and_at_the_end_outside_the_timed_step(monkeypatch):
    import types
    from training import loop
    from training import trainer as trainer_module
    clock = types.SimpleNamespace(now=0.0)

    def perf_counter():  # 1 ms per reading, plus the 100 s the callback "spends"
        clock.now += 0.001
        return clock.now

    fake_time = types.SimpleNamespace(perf_counter=perf_counter)
    monkeypatch.setattr(loop, "time", fake_time)
    monkeypatch.setattr(trainer_module, "time", fake_time)   # Trainer.timed_step times the step itself
    trainer, seen = tiny_trainer("clade"), []

    def score(t):
        seen.append(t.step)
        clock.now += 100.0

    history = trainer.fit(TinyScenes(), steps=5, on_step=score, on_step_every=2, progress=False, log_every=5)
    # Counted, the callbacks would add 300 s; each step's own reading is about 1 ms.
    assert seen == [2, 4, 5] and trainer.train_seconds < 0.1
    assert history[-1]["images_per_s"] > 10


def test_the_evaluated_generator_has_batch_norm_statistics_of_the_first_training_batches(tmp_path):
    plain, estimated = tiny_trainer(seed=3), tiny_trainer(seed=3, bn_estimation_batches=2)
    scored = []
    for trainer in (plain, estimated):
        trainer.fit(TinyScenes(8), steps=3, on_step=lambda t: scored.append(t.generator_for_eval), on_step_every=1,
                    progress=False)
    # evaluating with re-estimated statistics does not change what is trained
    assert all(torch.equal(a, b) for a, b in zip(plain.G.state_dict().values(), estimated.G.state_dict().values()))
    evaluated = estimated.generator_for_eval
    assert evaluated is scored[-1] and evaluated is not estimated.G   # computed once per step, a copy
    first = [default_collate([TinyScenes(8)[i] for i in (2 * b, 2 * b + 1)]) for b in range(2)]  # index order
    expected = estimate_batch_norm(estimated.G, [(s, d) for s, _, d in map(estimated.preprocess, first)])
    stats = [k for k in expected.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(evaluated.state_dict()[k], expected.state_dict()[k]) for k in stats)
    assert any(not torch.equal(evaluated.state_dict()[k], estimated.G.state_dict()[k]) for k in stats)
    exported = load_generator_dir(estimated.export_generator(tmp_path / "g")).state_dict()
    assert all(torch.equal(exported[k], evaluated.state_dict()[k]) for k in stats)
    assert plain.generator_for_eval is plain.G
