"""A normalization layer defined here, outside the package, works everywhere once registered:
generator, fused model (stays unfused), costs, probe, checkpoint recognition, training."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.speed.bench import synthetic_batch
from analysis.costs.formulas import closed_form_generator_costs, has_closed_form
from analysis.costs.layers import generator_inputs, is_modulation, layer_costs
from analysis.probe.variance import capture_modulation_statistics, layer_summary, modulation_layers, variance_decomposition
from analysis.probe.ablation import ablation_effects
from analysis.speed.variants import calibrate_batchnorm
from models import (ModulatedNorm, build_generator, count_parameters, fuse_for_inference, norm_spec, register_norm,
                    unregister_norm)
from models.checkpoint import suggest_configs
from models.presets import generator_config
from models.registry import recognise_norm
from training.trainer import Trainer, TrainRecipe, discriminator_config_for

NAME = "test-class-gain"


class ClassGainNorm(ModulatedNorm):
    """scale = gain[class], shift = a 3x3 conv of the one-hot map (spatially smooth)."""

    def __init__(self, channels, config):
        super().__init__()
        self.class_nc = config.class_nc
        self.param_free_norm = nn.BatchNorm2d(channels, affine=False)
        self.class_gain = nn.Parameter(1 + 0.5 * torch.randn(config.class_nc, channels))
        self.smooth_bias = nn.Conv2d(config.class_nc, channels, 3, padding=1)

    def modulation(self, cond, size):
        scale = F.embedding(cond.label_at(size), self.class_gain).permute(0, 3, 1, 2)
        shift = self.smooth_bias(cond.semantic_at(size)[:, : self.class_nc])
        return scale, shift


@pytest.fixture(scope="module")
def registered():
    spec = register_norm(NAME, ClassGainNorm, label="class gain", color="#9467bd", class_adaptive=False,
                         key_markers=("class_gain",))
    yield spec
    unregister_norm(NAME)


@pytest.fixture
def G(registered):
    torch.manual_seed(0)
    G = build_generator("synthetic", NAME, ngf=4)
    (semantic,), kwargs = generator_inputs(G.config, 2, seed=1)
    return calibrate_batchnorm(G, {"semantic": semantic, **kwargs})


def test_build_generator_uses_the_registered_layer(G, registered):
    assert registered.source == __file__ and registered.label == "class gain"
    assert all(type(m) is ClassGainNorm for m in modulation_layers(G).values())
    assert "head_0.norm_0.class_gain" in G.state_dict()
    (semantic,), _ = generator_inputs(G.config, 2)
    with torch.no_grad():
        out = G(semantic)
    assert out.shape == (2, 3, *G.config.output_size) and out.abs().max() < 0.99


def test_fusion_keeps_the_layer_unfused_with_the_same_output(G):
    (semantic,), _ = generator_inputs(G.config, 2)
    with torch.no_grad():
        reference = G(semantic)
    G_fast = fuse_for_inference(G)
    assert type(G_fast.up_1.norm_0) is ClassGainNorm and G_fast.up_1.norm_0 is not G.up_1.norm_0
    assert (G_fast(semantic) - reference).abs().max() < 1e-4
    assert (G_fast(semantic, dtype=torch.bfloat16) - reference).abs().max() < 5e-2


def test_costs_count_it_and_skip_the_closed_form(G):
    args, kwargs = generator_inputs(G.config)
    table = layer_costs(G, args, kwargs=kwargs)
    assert table.params.sum() == count_parameters(G)
    modulation = table[table.role.map(is_modulation)]
    per_norm = sum(p.numel() for p in G.head_0.norm_0.parameters())
    assert modulation[modulation.module.str.startswith("head_0.norm_0")].params.sum() == per_norm
    assert modulation.gmacs_fvcore.sum() > 0   # the smooth-bias convs
    assert not has_closed_form(G.config)
    with pytest.raises(ValueError, match=f"no closed-form costs for norm '{NAME}'"):
        closed_form_generator_costs(G.config)


def test_probe_measures_and_ablates_it(G):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 9, (2, 1, 8, 8), generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)
    batches = [dict(label=label, instance=label, dist=torch.rand(2, 2, 64, 64, generator=g) * 2 - 1)]
    stats = capture_modulation_statistics(G, batches, progress=False)
    assert set(stats.layers) == set(modulation_layers(G))
    summary = layer_summary(variance_decomposition(stats))
    assert set(summary.layer) == set(stats.layers)
    effects = ablation_effects(G, stats, batches, per_layer=False, progress=False)
    assert list(effects.kind) == ["class_mean"]   # no ICPE map: no no_position ablation
    assert (effects.mean_abs_diff > 0).all()


def test_a_checkpoint_of_it_is_recognised(G):
    assert recognise_norm(G.state_dict()) == NAME
    assert NAME in suggest_configs(G.state_dict())[0] and norm_spec(NAME).label == "class gain"


def test_trains_two_steps(registered):
    config = generator_config("synthetic", NAME, ngf=4)
    trainer = Trainer(g_config=config, d_config=discriminator_config_for(config), device="cpu",
                      recipe=TrainRecipe(use_vgg=False, batch_size=2, seed=0))
    gains = trainer.G.head_0.norm_0.class_gain.detach().clone()
    data = synthetic_batch(config, 2)
    losses = [trainer.train_step(data) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in losses)
    assert not torch.equal(trainer.G.head_0.norm_0.class_gain.detach(), gains)
