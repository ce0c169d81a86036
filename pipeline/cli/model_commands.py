"""`prep baseline`, `train`, `evaluate`: the models, and the scores they reach on the test rows.

baseline classifies the embeddings as they are (the bar to clear); train fine-tunes a backbone
with a new head; evaluate scores that model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pipeline.cli import options as opt
from pipeline.cli.running import finish, refuse_dvc_outputs, stage_params, user_errors
from pipeline.core.params import parse_overrides

TRAIN = opt.Section("train")
EVALUATE = opt.Section("evaluate")


@user_errors
def baseline(
    split_manifest: opt.argument(Path, "Manifest from split") = Path("data/split/manifest.csv"),
    embeddings: opt.option(Path, "Vectors from `prep embed`") = Path("data/embeddings.npz"),
    report: opt.ReportOpt = Path("reports/baseline.json"),
    params: opt.ParamsOpt = None,
    set_: opt.set_option("logreg_c=0.5") = None,
) -> None:
    """Embedding baselines: nearest class centre (weight imprinting) and logistic regression.

    Fitted on the train rows' embeddings, scored on the test rows: the bar a fine-tuned
    model must clear.
    """
    from stages import baseline as stage

    refuse_dvc_outputs(report)
    p = stage_params("baseline", params, set_)
    result = stage.run(p.baseline, split_manifest, embeddings)
    finish(result, report)
    for method in stage.METHODS:
        m = result.extra[method]
        typer.echo(f"{method:<20} accuracy {m['accuracy']:.1%}  macro-F1 {m['macro_f1']:.3f}")


@user_errors
def train(
    train_manifest: opt.argument(
        Path, "Training manifest: augment's (all rows) or the split's"
    ) = Path("data/augmented/manifest.csv"),
    split_manifest: opt.option(
        Path, "Split manifest: val rows; train rows if --source split", "--split"
    ) = Path("data/split/manifest.csv"),
    out: opt.option(Path, "Folder for model.pt + model.json") = Path("models"),
    live: opt.option(Path, "DVCLive folder: curves + summary") = Path("dvclive"),
    backbone: TRAIN.flag(str, "backbone", "`prep backbones` lists them") = None,
    freeze: TRAIN.flag(str, "freeze", "all / 0 / N leading layers / a fraction") = None,
    source: TRAIN.flag(str, "source", "augmented / split (no augmentation)") = None,
    epochs: TRAIN.flag(int, "epochs", "Maximum epochs") = None,
    lr: TRAIN.flag(float, "lr", "Learning rate") = None,
    device: TRAIN.device() = None,
    seed: opt.SeedOpt = None,
    report: opt.ReportOpt = None,
    runtime: opt.option(Path, "Where wall time, images/s and device go (not a DVC metric)") = Path(
        "reports/runtime/train.json"
    ),
    params: opt.ParamsOpt = None,
    set_: opt.set_option("lr=0.0003") = None,
) -> None:
    """Fine-tune a backbone with a new head; keep the best validation epoch.

    With freeze all (the default) the backbone's features are computed once per image and
    only the head trains: seconds on a CPU. Curves and summary metrics go to DVCLive; what
    the run took (it differs every run) to --runtime.
    """
    from stages import train as stage

    refuse_dvc_outputs(out, live, report)
    typed_freeze = parse_overrides([f"freeze={freeze}"])["freeze"] if freeze else None
    p = stage_params(
        "train", params, set_, backbone=backbone, freeze=typed_freeze, source=source,
        epochs=epochs, lr=lr, device=device, seed=seed,
    )  # fmt: skip
    result = stage.run(p.train, p.seed, train_manifest, split_manifest, out, live)
    finish(result, report, runtime)
    typer.echo(f"{_outcome(result.extra)}, {_speed(result.runtime)}; model in {out}/")


def _outcome(m: dict[str, Any]) -> str:
    """Best and final val accuracy, and on how many val rows (one row can be many points)."""
    if not m.get("n_val"):
        return f"no val rows: the last epoch's model kept (epoch {m['best_epoch']})"
    return (
        f"best val acc {m['best_val_acc']:.3f} at epoch {m['best_epoch']} (final "
        f"{m['final_val_acc']:.3f}, rise epoch {m.get('rise_epoch') or '-'}; {m['n_val']} val rows)"
    )


def _speed(spent: dict[str, Any]) -> str:
    """The training rate, saying what was counted (a cached probe counts feature rows)."""
    if "feature_rows_per_s" in spent:
        return (
            f"{spent['feature_rows_per_s']:.0f} cached feature rows/s "
            f"(the trunk ran once per image: {spent['feature_cache_s']:.1f} s)"
        )
    return f"{spent['images_per_s']:.0f} images/s"


@user_errors
def evaluate(
    model_dir: opt.argument(Path, "Folder written by `prep train`") = Path("models"),
    split_manifest: opt.option(Path, "Split manifest: its test rows are scored", "--split") = Path(
        "data/split/manifest.csv"
    ),
    out: opt.option(Path, "test.json, predictions.csv, mistakes.png") = Path("metrics"),
    device: EVALUATE.device() = None,
    report: opt.ReportOpt = None,
    params: opt.ParamsOpt = None,
    set_: opt.set_option("top_k=5") = None,
) -> None:
    """Score the model on the test rows: accuracy, macro-F1, top-k, per class, worst mistakes."""
    from stages import evaluate as stage

    refuse_dvc_outputs(out, report)
    p = stage_params("evaluate", params, set_, device=device)
    result = stage.run(p.evaluate, model_dir, split_manifest, out)
    finish(result, report)
    m = result.extra
    topk = next((f"{k} {v:.1%}" for k, v in m.items() if k.startswith("top")), "")
    typer.echo(
        f"test accuracy {m['accuracy']:.1%} on {m['n_test']} images "
        f"(macro-F1 {m['macro_f1']:.3f}, {topk.replace('_', ' ')}); details in {out}/"
    )
