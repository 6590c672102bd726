import torch

from engine.cameras import make_cameras, orbit_cameras, sample_cameras, view_label, view_prompt


def test_view_labels_follow_azimuth_and_elevation():
    assert view_label(0, 10) == "front" and view_label(30, 0) == "front"
    assert view_label(90, 0) == "side" and view_label(-90, 0) == "side"
    assert view_label(180, 0) == "back" and view_label(-150, 20) == "back"
    assert view_label(180, 75) == "overhead"
    assert view_prompt("a red cube", "side") == "a red cube, side view"


def test_camera_looks_at_origin_from_the_front():
    cam = make_cameras(0.0, 0.0, 2.5, 1.0)
    assert torch.allclose(cam.origins[0], torch.tensor([0.0, 0.0, 2.5]), atol=1e-5)
    forward = -cam.c2w[0, :3, 2]
    assert torch.allclose(forward, torch.tensor([0.0, 0.0, -1.0]), atol=1e-5)
    overhead = make_cameras(0.0, 90.0, 2.0, 1.0)
    assert torch.isfinite(overhead.c2w).all()


def test_random_cameras_respect_ranges_and_seed():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = sample_cameras(256, g1), sample_cameras(256, g2)
    assert torch.equal(a.c2w, b.c2w)
    assert a.elevation.min() >= -10 and a.elevation.max() <= 90
    assert a.distance.min() >= 2.0 and a.distance.max() <= 3.0
    assert set(a.labels()) == {"front", "side", "back", "overhead"}
    ring = orbit_cameras(4)
    assert ring.labels() == ["front", "side", "back", "side"]


def test_camera_batch_indexing_gives_sub_batches():
    from engine.cameras import make_cameras

    cams = make_cameras([0.0, 90.0, 180.0], [0.0, 10.0, 70.0], [2.0, 2.5, 3.0], [1.0, 1.1, 1.2])
    assert len(cams[1]) == 1 and float(cams[1].azimuth[0]) == 90.0
    assert cams[1:].labels() == cams.labels()[1:]
    assert torch.equal(cams[torch.tensor([2, 0])].distance, torch.tensor([3.0, 2.0]))


def test_uniform_on_sphere_share_of_cameras():
    """rate 0 draws exactly what it did before (same generator stream); rate 1 draws sin(elevation)
    uniformly, which puts fewer cameras near the pole than uniform-in-angle does."""
    import math

    plain = sample_cameras(4000, torch.Generator().manual_seed(1), (-10.0, 90.0))
    zero = sample_cameras(4000, torch.Generator().manual_seed(1), (-10.0, 90.0), uniform_sphere_rate=0.0)
    assert torch.equal(plain.elevation, zero.elevation)
    sphere = sample_cameras(4000, torch.Generator().manual_seed(1), (-10.0, 90.0), uniform_sphere_rate=1.0)
    assert sphere.elevation.min() >= -10 and sphere.elevation.max() <= 90
    lo, hi = math.sin(math.radians(-10)), 1.0
    top = (math.sin(math.radians(90)) - math.sin(math.radians(60))) / (hi - lo)  # expected share above 60°
    assert abs(float((sphere.elevation > 60).float().mean()) - top) < 0.03
    assert abs(float((plain.elevation > 60).float().mean()) - 0.3) < 0.03
    half = sample_cameras(4000, torch.Generator().manual_seed(1), (-10.0, 90.0), uniform_sphere_rate=0.5)
    assert abs(float((half.elevation > 60).float().mean()) - (0.3 + top) / 2) < 0.03
