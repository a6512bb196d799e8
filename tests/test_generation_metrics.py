"""Generation scores: Frechet distance closed forms, nearest-neighbour distances, the feature classifier
(supervised on bars, self-supervised on unlabelled blobs) and score_generation on real / copied samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetkit.generation_metrics import (
    FeatureClassifier,
    GenerationScores,
    classifier_accuracy,
    classifier_features,
    frechet_distance,
    nearest_neighbour_distances,
    score_generation,
    train_feature_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _bars(n: int, seed: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, size, size)`` images in [-1, 1]: class 0 a horizontal bar, class 1 a vertical bar, at a
    random position, with noise; and their ``(n,)`` labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.full((n, 1, size, size), -0.8)
    positions = torch.randint(1, size - 1, (n,), generator=g)
    for i in range(n):
        if labels[i] == 0:
            images[i, 0, positions[i], :] = 0.8
        else:
            images[i, 0, :, positions[i]] = 0.8
    images = images + 0.15 * torch.randn(images.shape, generator=g)
    return images.clamp(-1, 1), labels


def _blobs(n: int, seed: int, size: int = 12) -> torch.Tensor:
    """``(n, 1, size, size)`` unlabelled images: a bright Gaussian blob with a dimmer one beside it."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centres = torch.rand((n, 2), generator=g) * (size / 2) + size / 4
    images = torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / 4)
    images = images + 0.5 * torch.exp(
        -((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None] - 3) ** 2) / 2
    )
    images = images + 0.05 * torch.randn(images.shape, generator=g)
    return (images * 1.6 - 0.8).clamp(-1, 1)[:, None]


@pytest.fixture(scope="module")
def bars_classifier() -> FeatureClassifier:
    torch.set_num_threads(1)
    images, labels = _bars(240, seed=0)
    classifier, kind = train_feature_classifier(images, labels, epochs=8, seed=0)
    assert kind == "classes"
    return classifier


# Frechet distance


def test_frechet_of_identical_features_is_zero():
    features = np.random.default_rng(0).normal(size=(300, 6))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_is_symmetric():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 5))
    b = rng.normal(size=(150, 5)) * 1.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)
    assert frechet_distance(a, b) > 0.5


def test_frechet_matches_closed_form_for_1d_gaussians():
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, size=(40000, 1))
    b = rng.normal(1.5, 2.0, size=(40000, 1))
    expected = (0.0 - 1.5) ** 2 + (1.0 - 2.0) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)
    assert frechet_distance(a[:, 0], b[:, 0]) == pytest.approx(frechet_distance(a, b))  # 1-D arrays


def test_frechet_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(3)
    mu_a, mu_b = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    s_a, s_b = np.array([1.0, 0.5, 2.0, 1.0]), np.array([2.0, 0.5, 1.0, 3.0])
    a = mu_a + s_a * rng.normal(size=(40000, 4))
    b = mu_b + s_b * rng.normal(size=(40000, 4))
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((s_a - s_b) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)


def test_frechet_of_shifted_degenerate_features_is_the_shift():
    # 10 rows in 20 dimensions: singular covariances must not give NaN
    a = np.random.default_rng(4).normal(size=(10, 20))
    assert frechet_distance(a, a + 0.5) == pytest.approx(20 * 0.25, rel=1e-3)


@pytest.mark.parametrize(
    "a, b",
    [
        (np.zeros((1, 3)), np.zeros((5, 3))),
        (np.zeros((5, 3)), np.zeros((1, 3))),
        (np.zeros((5, 3)), np.zeros((5, 4))),
        (np.zeros((5, 3, 2)), np.zeros((5, 3, 2))),
        (np.full((5, 3), np.nan), np.zeros((5, 3))),
    ],
)
def test_frechet_rejects_bad_input(a, b):
    with pytest.raises(ValueError):
        frechet_distance(a, b)


# nearest-neighbour distances


def test_nearest_neighbour_distance_is_zero_for_copies():
    references = torch.rand(50, 1, 8, 8) * 2 - 1
    distances = nearest_neighbour_distances(references[[3, 17, 49]], references)
    assert distances.shape == (3,)
    assert np.all(distances == 0.0)


def test_nearest_neighbour_distance_matches_brute_force():
    g = torch.Generator().manual_seed(5)
    queries = torch.rand((37, 3, 5, 6), generator=g) * 2 - 1
    references = torch.rand((53, 3, 5, 6), generator=g) * 2 - 1
    flat_q, flat_r = queries.reshape(37, -1).double(), references.reshape(53, -1).double()
    brute = torch.stack([((q - flat_r) ** 2).mean(1).sqrt().min() for q in flat_q]).numpy()
    chunked = nearest_neighbour_distances(queries, references, query_chunk=8, reference_chunk=10)
    assert chunked.dtype == np.float64
    np.testing.assert_allclose(chunked, brute, rtol=1e-10)
    np.testing.assert_allclose(nearest_neighbour_distances(queries, references), brute, rtol=1e-10)


def test_nearest_neighbour_distance_rejects_mismatched_sizes():
    with pytest.raises(ValueError):
        nearest_neighbour_distances(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 9))


# feature classifier


def test_feature_classifier_shapes_for_small_and_large_inputs():
    model = FeatureClassifier(in_channels=3, num_classes=5).eval()
    for shape in [(4, 3, 8, 8), (2, 3, 40, 24)]:
        x = torch.rand(shape) * 2 - 1
        assert model.features(x).shape == (shape[0], 128)
        assert model(x).shape == (shape[0], 5)
    with pytest.raises(ValueError):
        model(torch.zeros(2, 1, 8, 8))


def test_classifier_learns_bars(bars_classifier):
    assert not bars_classifier.training
    images, labels = _bars(120, seed=1)
    assert classifier_accuracy(bars_classifier, images, labels) >= 0.9
    features = classifier_features(bars_classifier, images, batch_size=50)
    assert features.shape == (120, 128) and features.dtype == np.float64


def test_rotation_mode_without_labels():
    images = _blobs(48, seed=0)
    logs: list[str] = []
    classifier, kind = train_feature_classifier(images, None, epochs=2, batch_size=16, log=logs.append)
    assert kind == "rotations" and classifier.kind == "rotations"
    assert classifier.num_classes == 4 and not classifier.training
    assert len(logs) == 2
    features = classifier_features(classifier, images)
    assert features.shape == (48, 128) and np.isfinite(features).all()


def test_training_is_deterministic_for_a_seed():
    images, labels = _bars(40, seed=2)
    runs = [train_feature_classifier(images, labels, epochs=2, batch_size=16, seed=s)[0] for s in (7, 7, 8)]
    first, second, other = (classifier_features(m, images) for m in runs)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_training_rejects_bad_labels():
    images, labels = _bars(10, seed=0)
    with pytest.raises(ValueError):
        train_feature_classifier(images, labels[:5])
    with pytest.raises(ValueError):
        train_feature_classifier(images, labels.float())
    with pytest.raises(ValueError):
        train_feature_classifier(images, torch.zeros(10, dtype=torch.long))


# score_generation


@pytest.fixture(scope="module")
def bars_split() -> dict[str, torch.Tensor]:
    train, train_labels = _bars(240, seed=0)  # what bars_classifier was trained on
    heldout, heldout_labels = _bars(200, seed=10)
    fresh, fresh_labels = _bars(24, seed=11)
    return dict(
        train=train, train_labels=train_labels, heldout=heldout, heldout_labels=heldout_labels,
        fresh=fresh, fresh_labels=fresh_labels,
    )  # fmt: skip


def test_score_of_fresh_real_images_is_near_the_floor(bars_classifier, bars_split):
    s = bars_split
    scores = score_generation(
        s["fresh"], s["fresh_labels"], s["train"], s["train_labels"], s["heldout"], s["heldout_labels"],
        classifier=bars_classifier,
    )  # fmt: skip
    assert isinstance(scores, GenerationScores)
    assert scores.classifier == "classes" and scores.n_samples == 24
    assert scores.accuracy >= 0.9 and scores.real_accuracy >= 0.9
    assert scores.frechet < 2.5 * scores.frechet_floor
    assert scores.copies == 0
    assert scores.nn_distance == pytest.approx(scores.nn_distance_real, rel=0.3)

    noise = torch.rand((24, 1, 8, 8), generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = score_generation(
        noise, s["fresh_labels"], s["train"], s["train_labels"], s["heldout"], s["heldout_labels"],
        classifier=bars_classifier,
    )  # fmt: skip
    assert bad.frechet > 5 * scores.frechet
    assert bad.frechet_floor == pytest.approx(scores.frechet_floor)


def test_score_counts_copies_of_training_images(bars_classifier, bars_split):
    s = bars_split
    copied = s["train"][:30]
    scores = score_generation(
        copied, None, s["train"], s["train_labels"], s["heldout"], s["heldout_labels"],
        classifier=bars_classifier,
    )  # fmt: skip
    assert scores.copies == 30 == scores.n_samples
    assert scores.nn_distance == 0.0 < scores.nn_distance_real
    assert scores.accuracy is None and scores.real_accuracy is not None


def test_score_without_labels_trains_rotation_features_deterministically():
    train, heldout, samples = _blobs(64, seed=0), _blobs(32, seed=1), _blobs(16, seed=2)
    runs = [score_generation(samples, None, train, None, heldout, None, seed=3) for _ in range(2)]
    first = runs[0].to_dict()
    assert first == runs[1].to_dict()
    assert set(first) == {
        "accuracy", "real_accuracy", "frechet", "frechet_floor", "nn_distance", "nn_distance_real",
        "copies", "n_samples", "classifier",
    }  # fmt: skip
    assert first["classifier"] == "rotations"
    assert first["accuracy"] is None and first["real_accuracy"] is None
    assert np.isfinite(first["frechet"]) and first["frechet_floor"] > 0


def test_score_rejects_mismatched_images(bars_classifier, bars_split):
    s = bars_split
    with pytest.raises(ValueError):
        score_generation(
            torch.zeros(4, 1, 8, 9), None, s["train"], None, s["heldout"], None, classifier=bars_classifier
        )
    with pytest.raises(ValueError):
        score_generation(
            s["fresh"], s["fresh_labels"][:3], s["train"], None, s["heldout"], None,
            classifier=bars_classifier,
        )  # fmt: skip
