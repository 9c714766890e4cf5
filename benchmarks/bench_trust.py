"""Benchmark: the sanity check of every method on the demo's model, and what each trust metric costs.

Trains the demo's ``SmallCNN`` (``lightning_explain.tools.demo``) on ShortcutShapes as the demo's "clean" run does
(cue uninformative, 768 images of 48 px, 6 epochs, seed 0), then, on the first 4 validation images, for every method
that gives one map per image: the trust values of ``ExplainCallback(trust=True)`` (median over the images) and the
seconds each group of :data:`~lightning_explain.epoch.trust_schedule.TRUST_TESTS` takes for that method. A method
"passes" the sanity check when its median ``mprt_spearman`` (every module re-initialised) is at most 0.5, the
callback's default ``sanity_threshold``. The same is done on the untrained model (epoch 0) with ``--untrained``.

Run::

    .venv/bin/python benchmarks/bench_trust.py            # about a minute on 2 free CPU cores
    .venv/bin/python benchmarks/bench_trust.py --markdown

No timing is asserted anywhere; machines are noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import warnings

import torch

from lightning_explain._lightning import NAMESPACES
from lightning_explain.data import ShortcutShapesDataModule
from lightning_explain.epoch.trust_schedule import TRUST_NAMES, TRUST_TESTS, Trust, method_explainer
from lightning_explain.functional import METHODS, explain
from lightning_explain.functional.registry import ATTENTION_METHODS
from lightning_explain.tools.demo import SmallCNN

warnings.filterwarnings("ignore")
pl = NAMESPACES[-1]  # the namespace SmallCNN was built on (the demo's choice)
SHOWN = ("mprt_spearman_top", "mprt_spearman", "mprt_ssim", "random_logit_ssim", "max_sensitivity",
         "sparseness", "complexity", "faithfulness_correlation")  # fmt: skip


def trained_model(epochs: int) -> tuple[SmallCNN, torch.Tensor]:
    pl.seed_everything(0, verbose=False)
    data = ShortcutShapesDataModule(
        train_size=768, val_size=128, batch_size=32, image_size=48, cue_agreement=1 / 3, seed=0, cue_size=12,
        noise=0.15,
    )  # fmt: skip
    model = SmallCNN()
    if epochs:
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_model_summary=False, enable_progress_bar=False)  # fmt: skip
        trainer.fit(model, datamodule=data)
    data.setup("validate")
    images = torch.stack([data.val_dataloader().dataset[i][0] for i in range(4)])
    return model.eval(), images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, images = trained_model(args.epochs)
    methods = [m for m in METHODS if m not in ATTENTION_METHODS and m != "activations"]
    options = {"smoothgrad": {"samples": 8}, "integrated_gradients": {"steps": 16},
               "occlusion": {"window": 8, "stride": 4}, "lime": {"samples": 64}}  # fmt: skip
    explainer = method_explainer(model, "features.9", top_k=3, output_transform=None, options=options,
                                 layer_layout=None)  # fmt: skip
    rows = []
    for method in methods:
        start = time.perf_counter()
        result = explain(
            model, images, "features.9", [method], options={method: options[method]} if method in options else None
        )
        map_seconds = time.perf_counter() - start
        values: dict[str, float] = {}
        seconds: dict[str, float] = {}
        for test in TRUST_TESTS:
            spec = dataclasses.replace(Trust(), tests=(test,))
            start = time.perf_counter()
            out = spec.score(model, images, result, "x", None, explainer)
            seconds[test] = time.perf_counter() - start
            values.update({k.rsplit("/", 1)[1]: float(torch.nanmedian(v)) for k, v in out.items()})
        passed = values["mprt_spearman"] <= Trust().sanity_threshold
        rows.append((method, values, seconds, map_seconds, passed))
        cells = " ".join(f"{values.get(k, float('nan')):6.2f}" for k in SHOWN)
        print(f"{method:<24} {'pass' if passed else 'FAIL'} {cells}  map {map_seconds:.2f} s, "
              + ", ".join(f"{t} {s:.2f} s" for t, s in seconds.items()), flush=True)  # fmt: skip
    if args.markdown:
        print("\n| method | sanity | " + " | ".join(SHOWN) + " |\n|---|---|" + "---:|" * len(SHOWN))
        for method, values, _, _, passed in rows:
            cells = " | ".join(f"{values.get(k, float('nan')):.2f}" for k in SHOWN)
            print(f"| {method} | {'passes' if passed else '**fails**'} | {cells} |")
        print("\n| method | map | " + " | ".join(TRUST_TESTS) + " |\n|---|---:|" + "---:|" * len(TRUST_TESTS))
        for method, _, seconds, map_seconds, _ in rows:
            cells = " | ".join(f"{seconds[t] * 1000:.0f}" for t in TRUST_TESTS)
            print(f"| {method} | {map_seconds * 1000:.0f} | {cells} |")
        cheap = [r for r in rows if r[0] in ("gradcam", "saliency")]
        for test in TRUST_TESTS:
            print(
                f"median ms for {test} (gradcam, saliency): {statistics.median(r[2][test] for r in cheap) * 1000:.0f}"
            )
    assert set(SHOWN) <= {n for names in TRUST_NAMES.values() for n in names}


if __name__ == "__main__":
    main()
