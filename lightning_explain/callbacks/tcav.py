"""TCAVCallback: concept sensitivity (TCAV, Kim et al. 2018) of chosen classes, logged as scalars every n epochs."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch.utils.data.dataloader import default_collate

from lightning_explain.callbacks import _defaults as D
from lightning_explain.callbacks._renamed import renamed
from lightning_explain.callbacks._view import ViewCallback
from lightning_explain.capture import preserve_model_state, preserve_rng, resolve_layer
from lightning_explain.epoch.checks import check_int, check_positive_int, is_int
from lightning_explain.epoch.probe import BatchUnpacker, first_val_loader, probe_from_dataset, unpack_batch
from lightning_explain.functional.context import check_inputs
from lightning_explain.functional.predictions import predicted_classes, split_by_class
from lightning_explain.functional.targets import OutputTransform
from lightning_explain.functional.tcav import TCAVScores, tcav

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = ["ExampleSource", "TCAVCallback", "load_examples"]

#: Concept or random examples: a tensor ``[N, C, H, W]``, a map-style dataset, or an import path
#: ``"package.module:name"`` of either (or of a function with no arguments that returns either).
ExampleSource = Tensor | Dataset[Any] | str


def load_examples(source: Any, what: str, limit: int, **unpack: Any) -> Tensor:
    """The images of ``source`` (see :data:`ExampleSource`), at most ``limit``, as a CPU tensor ``[N, C, H, W]``."""
    if isinstance(source, str):
        module_name, _, attr = source.partition(":") if ":" in source else source.rpartition(".")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(
                f"{what}: cannot import {source!r} ({err}). Give 'package.module:name' of a tensor, a dataset, "
                "or a function with no arguments returning one."
            ) from None
        source = value() if callable(value) and not isinstance(value, (Tensor, Dataset)) else value
    if isinstance(source, Tensor):
        images = source
    elif isinstance(source, Dataset) and hasattr(source, "__len__"):
        count = min(limit, len(source))
        if count == 0:
            raise ValueError(f"{what}: the dataset is empty.")
        with preserve_rng():
            batch = default_collate([source[i] for i in range(count)])
        images, _ = unpack_batch(batch, **unpack)
    else:
        raise TypeError(
            f"{what} must be a [N, C, H, W] tensor, a map-style dataset or an import path; got {type(source).__name__}."
        )
    check_inputs(images)
    return images[:limit].detach().cpu().clone()


class TCAVCallback(ViewCallback):
    """Concept sensitivity per class (TCAV), every ``every_n_epochs`` validation epochs, logged as scalars.

    For each concept, ``num_random`` CAVs are fitted at ``layer`` (concept examples vs ``num_random`` disjoint
    random sets) and ``num_random`` random-vs-random CAVs (a reference random set vs the same sets). The TCAV score
    of class ``k`` is the share of validation examples of class ``k`` whose class-``k`` logit grows along the CAV;
    a two-sided t-test of the concept's scores against the random-vs-random scores gives the p-value. See
    :func:`lightning_explain.functional.tcav.tcav`.

    Cost per run: one no-grad forward of every concept and random example, one forward + ``autograd.grad`` of the
    class examples, and ``(concepts + 1) * num_random`` small logistic regressions on the CPU/GPU (full batch).

    Args:
        layer: dotted name of the layer whose activations the CAVs live in.
        concepts: concept name -> examples: a tensor ``[N, C, H, W]``, a map-style dataset (batches unpacked as
            for the probe), or an import path ``"package.module:name"`` of either (YAML-friendly).
        random_examples: the pool the random sets are drawn from (same forms); None draws them from the first
            validation dataset. Split into ``num_random + 1`` disjoint sets of ``set_size`` with a private
            generator seeded with ``seed``.
        classes: class indices to score; None = every class present among the class examples.
        every_n_epochs: run when ``current_epoch % every_n_epochs == 0``.
        num_random: random sets (CAVs per concept); at least 2 for the t-test.
        set_size: examples per random set (and at most this many concept examples are used).
        num_class_examples: validation examples (the first ones) whose labels pick the inputs of each class.
        significance: significance level of the ``significant`` flag, in (0, 1).
        cav_method: ``"logistic"`` (logistic regression) or ``"mean_difference"``.
        cav_steps: gradient steps of the logistic regression.
        seed: seed of the private generator that draws the random sets (the global RNG is never used).
        batch_size: images per forward.
        class_names, input_key, label_key, unpack_batch, output_transform, tag_prefix, strict: as in
            :class:`~lightning_explain.ExplainCallback`.
        alpha: deprecated name of ``significance`` (a deprecation warning; removed in the next release; ``alpha``
            is the overlay opacity in the other views).

    Logged metrics (``{k}`` is the class name or index):
        - ``{tag_prefix}/tcav/{concept}/{k}/score``: mean TCAV score over the concept's CAVs.
        - ``{tag_prefix}/tcav/{concept}/{k}/random_score``: mean score of the random-vs-random CAVs.
        - ``{tag_prefix}/tcav/{concept}/{k}/p_value``: two-sided t-test, concept vs random scores.
        - ``{tag_prefix}/tcav/{concept}/{k}/significant``: 1.0 when ``p_value < significance``, else 0.0.
        - ``{tag_prefix}/tcav/{concept}/cav_accuracy``: mean training accuracy of the concept's CAV classifiers.

    Example:
        >>> cb = TCAVCallback("layer3", concepts={"stripes": "my_project.concepts:stripes"}, classes=[0, 1])
    """

    def __init__(
        self,
        layer: str,
        concepts: dict[str, Tensor | Dataset[Any] | str],
        random_examples: Tensor | Dataset[Any] | str | None = None,
        *,
        classes: Sequence[int] | None = None,
        every_n_epochs: int = D.EVERY_N_EPOCHS,
        num_random: int = 5,
        set_size: int = 32,
        num_class_examples: int = 64,
        significance: float = 0.05,
        cav_method: Literal["logistic", "mean_difference"] = "logistic",
        cav_steps: int = 300,
        seed: int = 0,
        batch_size: int = 64,
        class_names: Sequence[str] | None = None,
        input_key: str = D.INPUT_KEY,
        label_key: str = D.LABEL_KEY,
        unpack_batch: BatchUnpacker | None = None,
        output_transform: OutputTransform = None,
        tag_prefix: str = D.TAG_PREFIX,
        strict: bool = D.STRICT,
        alpha: float | None = None,
    ) -> None:
        significance = renamed("TCAVCallback", "alpha", alpha, "significance", significance, 0.05)
        super().__init__(
            every_n_epochs=every_n_epochs,
            num_probe=num_class_examples,  # the probe is the class examples
            class_names=class_names,
            input_key=input_key,
            label_key=label_key,
            unpack_batch=unpack_batch,
            output_transform=output_transform,
            tag_prefix=tag_prefix,
            strict=strict,
        )
        check_positive_int(set_size=set_size, cav_steps=cav_steps, batch_size=batch_size)
        check_int("num_random", num_random, minimum=2, why=" (the t-test needs two runs)")
        if not isinstance(concepts, Mapping) or not concepts:
            raise ValueError("concepts must be a non-empty dict: concept name -> tensor, dataset or import path.")
        if not 0.0 < significance < 1.0:
            raise ValueError(f"significance must lie in (0, 1); got {significance}.")
        if cav_method not in ("logistic", "mean_difference"):
            raise ValueError(f"cav_method must be 'logistic' or 'mean_difference'; got {cav_method!r}.")
        if classes is not None and not all(is_int(c, minimum=0) for c in classes):
            raise ValueError(f"classes must be class indices >= 0; got {classes!r}.")
        self.layer, self.concepts, self.random_examples = layer, dict(concepts), random_examples
        self.classes = list(classes) if classes is not None else None
        self.num_random, self.set_size, self.significance = num_random, set_size, significance
        self.cav_method, self.cav_steps, self.seed, self.batch_size = cav_method, cav_steps, seed, batch_size
        self._concepts: dict[str, Tensor] | None = None
        self._random_sets: list[Tensor] | None = None
        #: The last result: concept -> :class:`~lightning_explain.functional.tcav.TCAVScores`.
        self.latest: dict[str, TCAVScores] = {}
        #: The epoch ``latest`` belongs to.
        self.latest_epoch: int | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layer=self.layer, concepts=sorted(self.concepts), tag_prefix=self.tag_prefix)

    def _setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        resolve_layer(pl_module, self.layer)
        if self._concepts is None:
            unpack = {"input_key": self.input_key, "label_key": self.label_key, "unpacker": self.unpack_batch}
            self._concepts = {
                name: load_examples(src, f"concepts[{name!r}]", self.set_size, **unpack)
                for name, src in self.concepts.items()
            }

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super()._start(trainer, pl_module)
        if trainer.enable_validation:
            self._ensure_random_sets(trainer)

    def _ensure_random_sets(self, trainer: pl.Trainer) -> list[Tensor]:
        if self._random_sets is not None:
            return self._random_sets
        wanted = (self.num_random + 1) * self.set_size
        generator = torch.Generator().manual_seed(self.seed)
        unpack = {"input_key": self.input_key, "label_key": self.label_key}
        if self.random_examples is not None:
            pool = load_examples(self.random_examples, "random_examples", 10**9, **unpack, unpacker=self.unpack_batch)
            pool = pool[torch.randperm(pool.shape[0], generator=generator)]
        else:
            loader = first_val_loader(trainer)
            dataset = getattr(loader, "dataset", None)
            if dataset is None or not hasattr(dataset, "__len__"):
                raise ValueError(
                    "TCAVCallback draws random examples from the validation dataset, which is missing or has no "
                    "length; pass random_examples=<tensor, dataset or import path>."
                )
            order = torch.randperm(len(dataset), generator=generator)[:wanted].tolist()
            pool = probe_from_dataset(
                dataset,
                order,
                collate_fn=getattr(loader, "collate_fn", None),
                input_key=self.input_key,
                label_key=self.label_key,
                unpacker=self.unpack_batch,
            ).images
        size = min(self.set_size, pool.shape[0] // (self.num_random + 1))
        if size < 2:
            raise ValueError(
                f"TCAVCallback needs num_random + 1 = {self.num_random + 1} random sets of at least 2 examples; the "
                f"random pool has {pool.shape[0]}. Give more random examples or lower num_random."
            )
        self._random_sets = [pool[i * size : (i + 1) * size] for i in range(self.num_random + 1)]
        return self._random_sets

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._probe is not None and self._concepts is not None
        randoms = self._ensure_random_sets(trainer)
        device = pl_module.device
        images = self._probe.images.to(device)
        with preserve_model_state(pl_module):
            labels = self._probe.labels
            if labels is None:  # no labels: the model's own predictions pick each class's inputs
                labels = predicted_classes(pl_module, images, self.output_transform)
            classes = self.classes if self.classes is not None else sorted(set(labels.tolist()))
            class_inputs = split_by_class(images, labels, classes)
            missing = [k for k, x in class_inputs.items() if x.shape[0] == 0]
            if missing:
                raise ValueError(
                    f"no examples of classes {missing} among the first {len(self._probe)} validation samples; raise "
                    "num_class_examples or drop those classes."
                )
            result = tcav(
                pl_module,
                self.layer,
                class_inputs,
                {name: x.to(device) for name, x in self._concepts.items()},
                [r.to(device) for r in randoms],
                cav_method=self.cav_method,
                steps=self.cav_steps,
                output_transform=self.output_transform,
                batch_size=self.batch_size,
            )
        self.latest, self.latest_epoch = result, trainer.current_epoch
        values: dict[str, float] = {}
        for name, scores in result.items():
            base = f"{self.tag_prefix}/tcav/{name}"
            values[f"{base}/cav_accuracy"] = float(scores.cav_accuracy.mean())
            for j, k in enumerate(scores.classes):
                key = f"{base}/{self._class_name(k)}"
                values[f"{key}/score"] = float(scores.mean[j])
                values[f"{key}/random_score"] = float(scores.random_scores[:, j].mean())
                values[f"{key}/p_value"] = float(scores.p_values[j])
                values[f"{key}/significant"] = float(scores.p_values[j] < self.significance)
        self._log(pl_module, values)
