"""Scores of generated images without Inception weights: a feature classifier trained on the user's data.

FID needs an ImageNet Inception network; here the feature space comes from a small CNN
(:class:`FeatureClassifier`) trained on the user's own real images instead: supervised on the class labels
when there are labels, otherwise self-supervised on rotation prediction (which of 0/90/180/270 degrees an
image was rotated by), so the features still describe image structure.

:func:`score_generation` reports, for a set of generated samples:

* the Frechet distance between sample and held-out real features, next to a *floor*: the same distance
  between two disjoint real splits of the sample set's size (the value a perfect generator would get);
* for class-conditional samples, how often the classifier recognises the requested class, next to its
  accuracy on held-out real images;
* the mean distance of each sample to its nearest training image, next to the same for held-out real
  images, and how many samples sit closer to a training image than any held-out real image does
  (likely copies of the training set).

All images are float tensors ``(N, C, H, W)`` in ``[-1, 1]``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FeatureClassifier",
    "GenerationScores",
    "classifier_accuracy",
    "classifier_features",
    "frechet_distance",
    "nearest_neighbour_distances",
    "score_generation",
    "train_feature_classifier",
]

_FLOOR_SPLITS = 3  # seeded real/real splits averaged for the Frechet floor


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FeatureClassifier(nn.Module):
    """A small CNN: three 3x3 conv blocks (16, 32, 128 channels; BatchNorm, ReLU; the first with stride 2,
    2x2 max-pool between blocks), global average pooling to a 128-d feature vector, and a linear layer to
    ``num_classes`` logits. At the default ``image_size`` 32 the blocks work at 16, 8 and 4 pixels, which
    keeps CPU training to seconds; weights are kept channels-last (faster convolutions on CPU).

    Inputs ``(N, in_channels, H, W)`` in ``[-1, 1]`` with any ``H, W >= 8`` are resized to
    ``image_size x image_size`` (bilinear) inside :meth:`features`, so 8x8 digits and large crops both work.
    ``kind`` records what the classes are: ``"classes"`` (the data's labels) or ``"rotations"``
    (self-supervised rotation prediction, set by :func:`train_feature_classifier`).
    """

    feature_dim = 128

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 32):
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"need in_channels >= 1 and num_classes >= 1, got {in_channels}, {num_classes}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size
        self.kind = "classes"
        self.body = nn.Sequential(
            _conv_block(in_channels, 16, stride=2),
            nn.MaxPool2d(2),
            _conv_block(16, 32),
            nn.MaxPool2d(2),
            _conv_block(32, self.feature_dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(self.feature_dim, num_classes)
        self.to(memory_format=torch.channels_last)

    def resize(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, C, image_size, image_size)``, bilinear (no-op at that size)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, H, W) images, got shape {tuple(x.shape)}")
        if x.shape[-2:] == (self.image_size, self.image_size):
            return x
        return F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def features(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` images -> ``(N, 128)`` features (after global average pooling)."""
        return self.body(self.resize(x).contiguous(memory_format=torch.channels_last))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` images -> ``(N, num_classes)`` logits."""
        return self.head(self.features(x))


def _check_images(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be an (N, C, H, W) tensor, got {shape}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    if min(images.shape[-2:]) < 8:
        raise ValueError(f"{name} must be at least 8x8 pixels, got {tuple(images.shape[-2:])}")


def _check_labels(labels: Tensor, n: int, name: str) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices, got {labels.dtype}")
    if n and int(labels.min()) < 0:
        raise ValueError(f"{name} must be >= 0")
    return labels.long()


def _random_shift(batch: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each ``(C, S, S)`` image of ``batch`` by up to ``max_shift`` pixels in each direction
    (edges replicated)."""
    if max_shift <= 0:
        return batch
    n, c, h, w = batch.shape
    padded = F.pad(batch, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).to(batch.device)
    device = batch.device
    rows = offsets[:, 0, None] + torch.arange(h, device=device)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=device)  # (N, W)
    return padded[
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def train_feature_classifier(
    images: Tensor,
    labels: Optional[Tensor],
    *,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    log: Optional[Callable[[str], None]] = None,
) -> tuple[FeatureClassifier, str]:
    """Train a :class:`FeatureClassifier` on real images ``(N, C, H, W)`` in ``[-1, 1]``.

    With ``labels`` (``(N,)`` integer classes) it learns the classes, with small random shifts (up to
    1/16 of the side) as augmentation. Without labels it learns to tell by how much (0, 90, 180 or
    270 degrees) each image was rotated (4 classes; a fresh rotation per image and epoch, plus the
    shifts). Adam with a cosine learning-rate decay; trains on ``images.device``; deterministic for a
    ``seed`` (the global RNG is left untouched). ``log`` receives one line per epoch.

    Returns ``(classifier in eval mode, kind)`` with ``kind`` ``"classes"`` or ``"rotations"``.
    """
    _check_images(images, "images")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"need epochs >= 1 and batch_size >= 1, got {epochs}, {batch_size}")
    n = images.shape[0]
    if labels is not None:
        labels = _check_labels(labels, n, "labels").to(images.device)
        kind, num_classes = "classes", int(labels.max()) + 1
        if num_classes < 2:
            raise ValueError("labels hold a single class; pass labels=None for rotation features")
    else:
        kind, num_classes = "rotations", 4
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureClassifier(images.shape[1], num_classes).to(images.device)
    model.kind = kind
    with torch.no_grad():  # resize once; the augmentation works at the network's resolution
        data = torch.cat([model.resize(images[i : i + 512].float()) for i in range(0, n, 512)])
    max_shift = max(1, model.image_size // 16)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * steps_per_epoch)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        if kind == "rotations":
            rotations = torch.randint(0, 4, (n,), generator=generator)
        total_loss, correct = 0.0, 0
        for first in range(0, n, batch_size):
            index = order[first : first + batch_size]
            batch = data[index.to(data.device)]
            if kind == "rotations":
                target = rotations[index]
                batch = batch.clone()
                for k in (1, 2, 3):
                    chosen = (target == k).to(data.device)
                    batch[chosen] = torch.rot90(batch[chosen], k, dims=(2, 3))
                target = target.to(data.device)
            else:
                target = labels[index.to(labels.device)]
            batch = _random_shift(batch, max_shift, generator)
            logits = model(batch)
            loss = F.cross_entropy(logits, target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += loss.item() * len(index)
            correct += int((logits.argmax(1) == target).sum())
        if log is not None:
            log(
                f"feature classifier ({kind}) epoch {epoch + 1}/{epochs}: loss {total_loss / n:.4f}, "
                f"train accuracy {correct / n:.3f}, {time.perf_counter() - start:.1f} s"
            )
    model.eval()
    return model, kind


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def classifier_features(classifier: FeatureClassifier, images: Tensor, batch_size: int = 256) -> np.ndarray:
    """``(N, C, H, W)`` images -> ``(N, 128)`` float64 features (classifier put in eval mode)."""
    _check_images(images, "images")
    classifier.eval()
    device = _model_device(classifier)
    chunks = [
        classifier.features(images[i : i + batch_size].to(device).float()).double().cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks).numpy()


@torch.no_grad()
def classifier_accuracy(
    classifier: FeatureClassifier, images: Tensor, labels: Tensor, batch_size: int = 256
) -> float:
    """Fraction of ``(N, C, H, W)`` images whose arg-max class equals ``labels`` ``(N,)``."""
    _check_images(images, "images")
    labels = _check_labels(labels, images.shape[0], "labels")
    classifier.eval()
    device = _model_device(classifier)
    predicted = torch.cat(
        [
            classifier(images[i : i + batch_size].to(device).float()).argmax(1).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    )
    return float((predicted == labels.cpu()).double().mean())


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``(Na, F)`` and ``(Nb, F)``:
    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances.

    The matrix square root is :func:`scipy.linalg.sqrtm`; imaginary parts left by numerical error are
    dropped, and when the product is too singular for a finite root a tiny ridge (1e-6) is added to both
    covariances. Needs at least 2 rows in each set.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if b.ndim == 1:
        b = b[:, None]
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"features must be (N, F) arrays, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need at least 2 feature rows in each set, got {a.shape[0]} and {b.shape[0]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("features contain NaN or infinity")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root = _sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        ridge = 1e-6 * np.eye(cov_a.shape[0])
        root = _sqrtm((cov_a + ridge) @ (cov_b + ridge))
    distance = float(
        np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root.real)
    )
    return max(distance, 0.0)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular covariances: N < F is common
        root = scipy.linalg.sqrtm(matrix)
    if isinstance(root, tuple):  # older scipy with disp=False semantics
        root = root[0]
    return np.asarray(root)


@torch.no_grad()
def nearest_neighbour_distances(
    queries: Tensor, references: Tensor, query_chunk: int = 512, reference_chunk: int = 4096
) -> np.ndarray:
    """Per-pixel RMS distance ``sqrt(mean((q - r)^2))`` of each query image to its nearest reference image.

    ``queries`` ``(Nq, C, H, W)`` (or any ``(Nq, ...)``) and ``references`` ``(Nr, ...)`` with the same
    per-image size; returns ``(Nq,)`` float64 in the images' units. Distances are found in float64 in
    chunks of ``query_chunk x reference_chunk`` (memory bounded), and the winning neighbour's distance is
    recomputed directly, so an exact copy scores 0.
    """
    if queries.shape[0] < 1 or references.shape[0] < 1:
        raise ValueError("queries and references must each hold at least one image")
    q_all = queries.reshape(queries.shape[0], -1)
    r_all = references.reshape(references.shape[0], -1)
    if q_all.shape[1] != r_all.shape[1]:
        raise ValueError(f"image sizes differ: {tuple(queries.shape[1:])} vs {tuple(references.shape[1:])}")
    device = r_all.device
    dim = q_all.shape[1]
    result = np.empty(q_all.shape[0], dtype=np.float64)
    for qs in range(0, q_all.shape[0], query_chunk):
        q = q_all[qs : qs + query_chunk].to(device, torch.float64)
        q_sq = (q * q).sum(1, keepdim=True)
        best = torch.full((q.shape[0],), math.inf, dtype=torch.float64, device=device)
        best_index = torch.zeros(q.shape[0], dtype=torch.long, device=device)
        for rs in range(0, r_all.shape[0], reference_chunk):
            r = r_all[rs : rs + reference_chunk].to(torch.float64)
            squared = q_sq + (r * r).sum(1)[None, :] - 2.0 * (q @ r.T)
            value, index = squared.min(1)
            better = value < best
            best = torch.where(better, value, best)
            best_index = torch.where(better, index + rs, best_index)
        nearest = r_all[best_index].to(torch.float64)
        exact = ((q - nearest) ** 2).sum(1) / dim
        result[qs : qs + q.shape[0]] = exact.sqrt().cpu().numpy()
    return result


@dataclass
class GenerationScores:
    """Scores of a set of generated samples (see :func:`score_generation`)."""

    accuracy: Optional[float]  # class-conditional samples classified as their class (None without labels)
    real_accuracy: Optional[float]  # the classifier's accuracy on held-out real images (the reference)
    frechet: float  # samples vs held-out real, in classifier feature space
    frechet_floor: float  # the same between two disjoint real splits of the sample set's size
    nn_distance: float  # mean nearest-training-image RMS distance of the samples
    nn_distance_real: float  # the same for held-out real images
    copies: int  # samples closer to a training image than the closest held-out real image is
    n_samples: int
    classifier: str  # "classes" or "rotations"

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of the fields."""
        return asdict(self)


def _frechet_floor(features: np.ndarray, size: int, seed: int) -> float:
    """Mean Frechet distance between two disjoint random splits of ``size`` rows of ``features``."""
    size = min(size, features.shape[0] // 2)
    if size < 2:
        raise ValueError(f"need at least 4 real images for the Frechet floor, got {features.shape[0]}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(_FLOOR_SPLITS):
        order = rng.permutation(features.shape[0])
        values.append(frechet_distance(features[order[:size]], features[order[size : 2 * size]]))
    return float(np.mean(values))


def score_generation(
    samples: Tensor,
    sample_labels: Optional[Tensor],
    real_train: Tensor,
    train_labels: Optional[Tensor],
    real_heldout: Tensor,
    heldout_labels: Optional[Tensor],
    *,
    classifier: Optional[FeatureClassifier] = None,
    seed: int = 0,
) -> GenerationScores:
    """Score generated ``samples`` ``(Ns, C, H, W)`` against real images ``real_train`` ``(Nt, C, H, W)``
    (what the generator was trained on) and ``real_heldout`` ``(Nh, C, H, W)`` (unseen by it), all in
    ``[-1, 1]`` with the same ``C, H, W``; label tensors are ``(N,)`` integer classes or None.

    Without ``classifier`` one is trained on ``real_train`` (:func:`train_feature_classifier` with
    ``train_labels`` and ``seed``: class features with labels, rotation features without). Class accuracies
    are reported only for a ``"classes"`` classifier and when the matching labels are given. The Frechet
    floor pools train and held-out real features and averages 3 seeded disjoint split pairs of ``Ns``
    images each (fewer when the pool is smaller than ``2 Ns``). ``copies`` counts samples whose nearest
    training image is closer than the nearest training image of every held-out real image.
    """
    _check_images(samples, "samples")
    _check_images(real_train, "real_train")
    _check_images(real_heldout, "real_heldout")
    shape = tuple(real_train.shape[1:])
    for name, images in (("samples", samples), ("real_heldout", real_heldout)):
        if tuple(images.shape[1:]) != shape:
            raise ValueError(f"{name} have per-image shape {tuple(images.shape[1:])}, real_train {shape}")
    if samples.shape[0] < 2 or real_heldout.shape[0] < 2:
        raise ValueError("need at least 2 samples and 2 held-out real images")
    if sample_labels is not None:
        sample_labels = _check_labels(sample_labels, samples.shape[0], "sample_labels")
    if heldout_labels is not None:
        heldout_labels = _check_labels(heldout_labels, real_heldout.shape[0], "heldout_labels")

    if classifier is None:
        classifier, kind = train_feature_classifier(real_train, train_labels, seed=seed)
    else:
        kind = getattr(classifier, "kind", "classes")
    accuracy = real_accuracy = None
    if kind == "classes":
        if sample_labels is not None:
            accuracy = classifier_accuracy(classifier, samples, sample_labels)
        if heldout_labels is not None:
            real_accuracy = classifier_accuracy(classifier, real_heldout, heldout_labels)

    sample_features = classifier_features(classifier, samples)
    heldout_features = classifier_features(classifier, real_heldout)
    train_features = classifier_features(classifier, real_train)
    frechet = frechet_distance(sample_features, heldout_features)
    floor = _frechet_floor(np.concatenate([train_features, heldout_features]), samples.shape[0], seed)

    sample_nn = nearest_neighbour_distances(samples, real_train)
    heldout_nn = nearest_neighbour_distances(real_heldout, real_train)
    copies = int((sample_nn < heldout_nn.min()).sum())
    return GenerationScores(
        accuracy=accuracy,
        real_accuracy=real_accuracy,
        frechet=frechet,
        frechet_floor=floor,
        nn_distance=float(sample_nn.mean()),
        nn_distance_real=float(heldout_nn.mean()),
        copies=copies,
        n_samples=int(samples.shape[0]),
        classifier=kind,
    )
