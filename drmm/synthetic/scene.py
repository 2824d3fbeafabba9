"""Random scenes: the ground-truth latents of section 5.4 plus the other nuisances, from a seed.

Latents (one column each, in Z_NAMES order; the paper's slant, tilt, x, y, depth plus light):
- slant: degrees; the object tipped about the camera's horizontal axis, i.e. the elevation of
  the view: 0 = seen level, positive = seen from above.
- tilt: degrees; the object's heading about its own vertical axis: 0 = side view facing right,
  +90 = facing away from the camera, -90 = facing the camera.
- x, y: image position of the object's centre, in units of the image half-width, x to the
  right and y downward (the image's row direction); 0 = image centre.
- depth: distance of the object's centre from the camera along the optical axis, in object
  half-sizes (the largest half-extent of every class is 1). Depth changes the size only: the
  object is moved along its line of sight, so its image position stays (x, y).
- light_azimuth, light_elevation: degrees; direction towards the light, azimuth from the
  viewing direction towards the right, elevation upward (0, 0 = light from the camera).

Other nuisances drawn per image but not recorded as latents: the object's reflectance, a small
random stretch along its three axes, the background (a linear gradient plus a faint stripe
texture) and pixel noise. Everything is drawn with numpy from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z_NAMES = ("slant", "tilt", "x", "y", "depth", "light_azimuth", "light_elevation")


@dataclass
class RenderConfig:
    image_size: int = 32  # output height = width, pixels
    supersample: int = 2  # rays per pixel along each axis (anti-aliasing); 1 = one ray
    tan_half_fov: float = 0.4  # tan of half the camera's field of view (about 44 degrees)
    slant: tuple[float, float] = (-15.0, 45.0)  # degrees, uniform
    tilt: tuple[float, float] = (-90.0, 90.0)  # degrees, uniform
    x: tuple[float, float] = (-0.3, 0.3)  # image half-widths, uniform
    y: tuple[float, float] = (-0.3, 0.3)  # image half-widths, uniform
    depth: tuple[float, float] = (3.0, 6.0)  # object half-sizes, uniform
    light_azimuth: tuple[float, float] = (-70.0, 70.0)  # degrees, uniform
    light_elevation: tuple[float, float] = (0.0, 60.0)  # degrees, uniform
    albedo: tuple[float, float] = (0.55, 1.0)  # object reflectance, uniform
    stretch: tuple[float, float] = (0.9, 1.1)  # per-axis object scale factor, uniform
    ambient: float = 0.25  # light reaching surfaces facing away from the lamp
    background: tuple[float, float] = (0.05, 0.6)  # background mean intensity, uniform
    gradient: tuple[float, float] = (0.0, 0.3)  # background ramp across the image, uniform
    texture: tuple[float, float] = (0.0, 0.05)  # amplitude of the background stripes, uniform
    noise_std: float = 0.01  # Gaussian pixel noise, in intensity units (0..1)


@dataclass
class Scenes:
    """Everything needed to render n images; row i describes image i."""

    labels: np.ndarray  # (n,) int64 class index
    z: np.ndarray  # (n, len(Z_NAMES)) float64 latents
    albedo: np.ndarray  # (n,) object reflectance
    stretch: np.ndarray  # (n, 3) object scale factors along its x, y, z axes
    background: np.ndarray  # (n, 7) mean, ramp, ramp angle, stripe amp, freq, angle, phase

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> Scenes:
        return Scenes(self.labels[idx], self.z[idx], self.albedo[idx], self.stretch[idx],
                      self.background[idx])


def sample_scenes(n: int, num_classes: int, seed: np.random.SeedSequence,
                  cfg: RenderConfig) -> Scenes:
    """n scenes; each block of num_classes consecutive images holds every class once.

    Every image's numbers are drawn as one row, so the first m scenes are the same for any
    n >= m: a larger data set from the same seed extends a smaller one.
    """
    label_rng, value_rng = (np.random.default_rng(s) for s in seed.spawn(2))
    blocks = -(-n // num_classes)
    labels = np.argsort(label_rng.random((blocks, num_classes)), axis=1).ravel()[:n]  # (n,)
    ranges = [getattr(cfg, name) for name in Z_NAMES] + [
        cfg.albedo, cfg.stretch, cfg.stretch, cfg.stretch,
        cfg.background, cfg.gradient, (0, 2 * np.pi),  # mean, ramp, ramp direction
        cfg.texture, (2.0, 6.0), (0, 2 * np.pi), (0, 2 * np.pi),  # stripes: amplitude,
    ]  # frequency (cycles per image width), direction, phase
    lo, hi = np.array(ranges).T  # (D,), (D,)
    v = lo + (hi - lo) * value_rng.random((n, len(ranges)))  # (n, D) uniform, row by row
    k = len(Z_NAMES)
    return Scenes(labels.astype(np.int64), v[:, :k], v[:, k], v[:, k + 1:k + 4], v[:, k + 4:])


def rotation(slant_deg: np.ndarray, tilt_deg: np.ndarray) -> np.ndarray:
    """Object -> camera rotations, (n, 3, 3). Camera frame: x right, y down, z forward.

    R = Rx(slant) @ B @ Ry(tilt): heading about the object's up axis, then B (object x -> image
    right, object up -> image up, object z -> towards the camera), then the slant about the
    camera's x axis, which tips the object's top towards the camera for positive slant.
    """
    s, t = np.radians(slant_deg), np.radians(tilt_deg)
    n = len(s)
    ry = np.zeros((n, 3, 3))
    ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1] = np.cos(t), np.sin(t), 1
    ry[:, 2, 0], ry[:, 2, 2] = -np.sin(t), np.cos(t)
    rx = np.zeros((n, 3, 3))
    rx[:, 0, 0], rx[:, 1, 1], rx[:, 1, 2] = 1, np.cos(s), -np.sin(s)
    rx[:, 2, 1], rx[:, 2, 2] = np.sin(s), np.cos(s)
    b = np.diag([1.0, -1.0, -1.0])
    return rx @ b @ ry  # (n, 3, 3)


def light_direction(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """Unit vectors towards the light in the camera frame, (n, 3)."""
    a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.stack([np.sin(a) * np.cos(e), -np.sin(e), -np.cos(a) * np.cos(e)], 1)
