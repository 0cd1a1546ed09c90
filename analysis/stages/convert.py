"""Stage 'convert': a trained SPADE turned into CLADE without training, then briefly fine-tuned.

    python run_analysis.py --quick                                   # part of the default run
    python run_analysis.py convert --checkpoint latest_net_G.pth --preset ade20k --out reports/ade \\
        --dataroot datasets/ADEChallengeData2016 --convert-images 256 --convert-finetune-steps 0

Converts the run's ``checkpoints/spade/`` (or ``--checkpoint``: a SPADE folder with
``generator.json``, or an official ``latest_net_G.pth`` built from ``--preset``) with
``analysis.probe.convert``: every SPADE layer's gamma/beta averaged per class over ``--convert-images``
val label maps (the probe's images), the backbone copied. Writes
``checkpoints/spade-to-clade/`` (official CLADE layout) and, with ``--convert-finetune-steps`` K
> 0, ``checkpoints/spade-to-clade-ft/``: the converted weights trained K more steps under the train
stage's recipe, batch and data (a fresh discriminator: the train stage keeps none). The eval stage,
which runs next, scores every generator folder there, so both appear beside trained SPADE and CLADE
with costs, latency and quality. Cost on the default synthetic run: one pass over 64 label maps and
50 CLADE training steps (``--quick``: 16 maps, 10 steps).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pandas as pd

from data.presets import DATASETS
from models import load_generator_dir, norm_spec
from models.checkpoint import GENERATOR_WEIGHTS, inspect
from training.checkpoint_store import remove_training_state
from training.trainer import Trainer, discriminator_config_for

from analysis.context import RunContext, StageResult, TableRef
from analysis.probe.convert import CONVERSION_RECORD, load_spade_generator, write_clade_dir
from analysis.stages.probe import probe_batches
from analysis.stages.train import settings as train_settings, stage_recipe, training_dataset, vgg_status

log = logging.getLogger(__name__)

CONVERTED = "spade-to-clade"        # checkpoints/<CONVERTED>/: the training-free conversion
FINETUNED = "spade-to-clade-ft"     # checkpoints/<FINETUNED>/: the same after --convert-finetune-steps


def spade_source(ctx: RunContext) -> tuple[Path | None, str]:
    """(the SPADE generator to convert, or None with the reason): the spatially-adaptive one (a
    norm that is not ``class_adaptive``) among ``--checkpoint`` (ValueError when several are), else the run's checkpoints/spade when it
    exists. Folders given with ``--checkpoints`` are the user's: nothing is written into them
    unless a ``--checkpoint`` asks for a conversion."""
    given = [path for path in ctx.given_generators().values() if not norm_spec(inspect(path).norm).class_adaptive]
    if len(given) > 1:
        raise ValueError(f"--checkpoint: {len(given)} spatially-adaptive generators ({', '.join(map(str, given))}); the convert "
                         f"stage converts one, run it once per generator with another --out")
    if given:
        return given[0], ""
    folder = ctx.checkpoint_dir("spade")
    if not (folder / GENERATOR_WEIGHTS).is_file():
        return None, f"no SPADE generator in {folder} (train spade, or pass --checkpoint PATH)"
    if ctx.checkpoints is not None:
        return None, (f"--checkpoints {ctx.checkpoints} holds your generators and is left as it is; convert "
                      f"with: run_analysis.py convert --checkpoint {folder} --out OUT")
    return folder, ""


def finetune(ctx: RunContext, clade, steps: int) -> dict:
    """Train the converted ``clade`` ``steps`` steps under the train stage's recipe (its rate decay, EMA
    and BatchNorm re-estimation scaled to ``steps``); export it to
    ``checkpoints/spade-to-clade-ft/``; returns its row of the conversion table."""
    config = clade.config
    use_vgg, vgg_text = vgg_status(ctx.train.vgg_weights)
    recipe = stage_recipe({**train_settings(ctx), "planned_steps": steps}, use_vgg=use_vgg, seed=ctx.seed)
    trainer = Trainer(g_config=config, d_config=discriminator_config_for(config, ndf=ctx.train.ndf),
                      recipe=recipe, device=ctx.device, vgg_weights=ctx.train.vgg_weights)
    for net in (trainer.G, trainer.G_ema):
        if net is not None:
            net.load_state_dict(clade.state_dict())
    work = ctx.out / "train" / FINETUNED
    if work.exists():  # a short run from the converted weights, never resumed
        shutil.rmtree(work)
    settings = {"planned_steps": steps, "batch_size": ctx.train.batch_size, "crop_size": config.output_size[0]}
    log.info("[convert] fine-tuning %s for %d steps (--convert-finetune-steps; 0 skips it)", FINETUNED, steps)
    history = trainer.fit(training_dataset(ctx, config, settings), steps=steps,
                          out_dir=work, log_every=max(1, steps // 10), save_every=steps, sample_every=steps,
                          num_workers=0, label=FINETUNED)
    trainer.export_generator(ctx.checkpoint_dir(FINETUNED))
    remove_training_state(work)
    df = pd.DataFrame(history)
    return {"model": FINETUNED, "finetune_steps": trainer.step, "seconds": round(trainer.train_seconds, 1),
            "vgg": vgg_text, "GAN_Feat_end": round(float(df["GAN_Feat"].tail(1).mean()), 4) if "GAN_Feat" in df
            else float("nan")}


def check_finetune_data(ctx: RunContext, config, steps: int) -> None:
    """ValueError before any work when fine-tuning is asked for a generator whose classes the
    built-in synthetic scenes do not have and no --dataroot is given."""
    synthetic = DATASETS["synthetic"]
    if steps > 0 and ctx.dataroot is None and (config.label_nc, config.contain_dontcare_label) != (
            synthetic["label_nc"], synthetic["contain_dontcare_label"]):
        raise ValueError(f"fine-tuning a generator of {config.label_nc} classes needs its dataset: pass "
                         f"--dataroot, or --convert-finetune-steps 0 (the built-in synthetic scenes have "
                         f"{synthetic['label_nc']} classes)")


def run(ctx: RunContext) -> StageResult:
    opts = ctx.convert
    source, reason = spade_source(ctx)
    if source is None:
        log.info("[convert] nothing converted: %s", reason)
        return StageResult(summary={"skipped": reason}, notes=[f"Nothing converted: {reason}."])
    spade = load_spade_generator(source, preset=ctx.preset, device=ctx.device).eval()
    check_finetune_data(ctx, spade.config, opts.finetune_steps)
    batches, images_text, stand_in = probe_batches(ctx, spade.config, opts.images, ctx.train.batch_size)
    start = time.perf_counter()
    folder = write_clade_dir(spade, batches, ctx.checkpoint_dir(CONVERTED), images=opts.images, source=str(source))
    seconds = time.perf_counter() - start
    record = json.loads((folder / CONVERSION_RECORD).read_text())
    rows = [{"model": CONVERTED, "finetune_steps": 0, "seconds": round(seconds, 1), "vgg": "",
             "GAN_Feat_end": float("nan")}]
    log.info("[convert] %s -> %s in %.1f s (%d label maps)", source, folder, seconds, record["images"])
    if opts.finetune_steps > 0:
        rows.append(finetune(ctx, load_generator_dir(folder, ctx.device), opts.finetune_steps))
    table = pd.DataFrame(rows).assign(source=str(source), label_maps=int(record["images"]),
                                      classes_unseen=len(record["unseen_classes"]))
    ctx.write_table(table, "conversion", source=str(source), images=images_text, stand_in=stand_in)
    notes = [f"SPADE `{source}` converted to CLADE over {int(record['images'])} label maps ({images_text}); "
             f"{len(record['unseen_classes'])} class(es) missing at some layer's resolution got that layer's "
             f"overall mean. The eval stage scores `{CONVERTED}`"
             + (f" and `{FINETUNED}` ({opts.finetune_steps} fine-tuning steps, fresh discriminator)."
                if opts.finetune_steps > 0 else ".")]
    return StageResult(summary={"source": str(source), "checkpoints": [str(ctx.checkpoint_dir(r["model"])) for r in rows]},
                       notes=notes, proxy=[f"convert: {images_text}"] if stand_in else [],
                       tables=[TableRef("tables/conversion.csv", "SPADE converted to CLADE: label maps averaged, "
                                                                 "seconds, fine-tuning steps.")])
