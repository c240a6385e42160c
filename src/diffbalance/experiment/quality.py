"""What a run measures beyond accuracy: the reference classifier, class consistency, generation quality."""

from __future__ import annotations



from diffbalance.infra import distributed
from diffbalance.classify.train import TrainedClassifier, train_classifier
from diffbalance.data.imageset import ImageSet
from diffbalance.evaluate.consistency import class_consistency
from diffbalance.evaluate.fid.embedder import Embedder
from diffbalance.evaluate.fid.protocol import extractor_kind, fid_embedder, quality_report
from diffbalance.imbalance.subset import make_imbalanced
from diffbalance.infra.progress import console
from diffbalance.experiment.stage import Stage


def reference_classifier(st: Stage) -> TrainedClassifier:
    """A classifier trained on *balanced real* data, used to check that generated images show their class
    (and, for domain-FID, as the feature network). Trained once per run folder (checkpointed)."""
    config = st.config
    if st.reference is not None:
        return st.reference
    ref = st.train_full
    n = config.reference_images_per_class
    if n is not None:
        ref = make_imbalanced(ref, [min(n, c) for c in ref.counts()], "first", 0, "balanced reference")
    cfg = config.reference_train
    console.print(f"[bold]train[/] reference classifier on {len(ref)} balanced real images")
    st.reference = train_classifier(
        ref, cfg, device=st.device, seed=0, checkpoint_dir=st.out_dir / "checkpoints" / "reference", progress=st.progress
    )
    distributed.on_main(lambda: st.reference.save(st.out_dir / "reference-classifier"))  # for `fid --features domain`
    return st.reference


def consistency_table(st: Stage, generated: dict[str, ImageSet]) -> dict:
    config = st.config
    ref = reference_classifier(st)
    real = class_consistency(ref.predict, st.test)  # the reference's own accuracy per class: the ceiling
    table = {"reference": {"images": len(st.train_full) if config.reference_images_per_class is None
                           else config.reference_images_per_class * st.train_full.num_classes, "test": real}}
    for name, fills in generated.items():
        table[name] = class_consistency(ref.predict, fills)
    return table


def quality_table(st: Stage, generated: dict[str, ImageSet]) -> dict:
    """The paper's Table 2 (FID of the rebalanced set vs the original balanced train set) and what it hides. The
    rebalanced set's statistics come from its parts, so every image goes through the network once per run."""
    original = balanced_original(st)
    return {name: quality_report(original, (st.imbalanced, fills), fills, st.config.fid, device=st.device,
                                 embedder=run_embedder(st))
            for name, fills in generated.items()}


def run_embedder(st: Stage) -> Embedder:
    """The run's one FID feature network (Inception, or the reference classifier's features) and its memo of the
    images it has embedded, shared by the sweep and Table 2."""
    if st.embedder is None:
        cfg = st.config.fid
        domain = reference_classifier(st) if extractor_kind(cfg.features).get("needs_classifier", False) else None
        st.embedder = fid_embedder(cfg, st.device, domain_model=domain)
    return st.embedder


def balanced_original(st: Stage) -> ImageSet:
    """The original balanced training images the rebalanced set is compared with: per class, as many real images
    as the rebalanced set holds (the first ones in original order). For the paper's CIFAR-10 protocol that is the
    whole 50,000-image training set."""
    want = [min(n + a, have) for n, a, have in zip(st.imbalanced.counts(), st.images_to_add, st.train_full.counts())]
    return make_imbalanced(st.train_full, want, "first", 0, "original balanced")
