"""Analytic ray casting of primitive-built objects, many images at once (PyTorch, CPU).

Our stand-in for the paper's Blender renderer (section 5.4). A pinhole camera at the origin
looks down +z (x right, y down); the ray through a pixel is d = (u, v, 1), so a hit at ray
parameter t lies at depth t. Each primitive is a unit shape (sphere, cube, capped cylinder)
mapped into the camera frame by an affine map P = M u + C; the ray is carried into the unit
shape's frame (o' = -M^-1 C, d' = M^-1 d), intersected in closed form, and the hit's normal is
carried back with M^-T. The nearest hit over an object's primitives wins; shading is
Lambertian with an ambient term.

Per-pixel arithmetic is +, -, *, /, sqrt, min, max and selections only (the trigonometry runs
on per-image numbers in float64 numpy), so the images do not depend on the batch size or the
number of threads.
"""

from __future__ import annotations

import numpy as np
import torch

from drmm.synthetic.scene import RenderConfig, Scenes, light_direction, rotation
from drmm.synthetic.shapes import Primitive

Vec = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def pixel_rays(size: int, tan_half_fov: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray coordinates u (1, 1, S) across and v (1, S, 1) down, at pixel centres."""
    c = ((torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1) * tan_half_fov  # (S,)
    c = c.float()
    return c.view(1, 1, size), c.view(1, size, 1)


def slab(o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit t of the slab -1 <= o + t d <= 1 (inf-safe where d = 0)."""
    inv = 1.0 / d
    ta, tb = (-1.0 - o) * inv, (1.0 - o) * inv  # (n, S, S)
    return torch.minimum(ta, tb), torch.maximum(ta, tb)


def sign_toward(d: torch.Tensor) -> torch.Tensor:
    """Outward normal component of the face a ray along d enters: -sign(d)."""
    return torch.where(d > 0, -1.0, 1.0)


def hit_ellipsoid(o: Vec, d: Vec) -> tuple[torch.Tensor, Vec]:
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]  # (n, S, S)
    b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
    c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - 1.0  # (n, 1, 1)
    disc = b * b - a * c
    t = (-b - disc.clamp(min=0).sqrt()) / a
    t = torch.where((disc >= 0) & (t > 0), t, torch.inf)
    return t, (o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2])


def hit_box(o: Vec, d: Vec) -> tuple[torch.Tensor, Vec]:
    lo, hi = zip(*(slab(o[k], d[k]) for k in range(3)), strict=True)
    near = torch.maximum(torch.maximum(lo[0], lo[1]), lo[2])  # (n, S, S)
    far = torch.minimum(torch.minimum(hi[0], hi[1]), hi[2])
    t = torch.where((near <= far) & (near > 0), near, torch.inf)
    # The entered face is on the axis whose slab was entered last.
    normal = tuple((lo[k] == near) * sign_toward(d[k]) for k in range(3))
    return t, normal


def hit_cylinder(o: Vec, d: Vec) -> tuple[torch.Tensor, Vec]:
    a = d[0] * d[0] + d[1] * d[1]  # (n, S, S)
    b = o[0] * d[0] + o[1] * d[1]
    c = o[0] * o[0] + o[1] * o[1] - 1.0
    disc = b * b - a * c
    root = disc.clamp(min=0).sqrt()
    t_in, t_out = (-b - root) / a, (-b + root) / a  # the infinite tube
    lo, hi = slab(o[2], d[2])  # the caps
    near, far = torch.maximum(t_in, lo), torch.minimum(t_out, hi)
    t = torch.where((disc >= 0) & (near <= far) & (near > 0), near, torch.inf)
    side = t_in >= lo  # entered through the curved side, else through a cap
    zero = torch.zeros_like(t)
    normal = (torch.where(side, o[0] + t * d[0], zero), torch.where(side, o[1] + t * d[1], zero),
              torch.where(side, zero, sign_toward(d[2])))
    return t, normal


HIT = {"ellipsoid": hit_ellipsoid, "box": hit_box, "cylinder": hit_cylinder}


def unit_frame_maps(p: Primitive, rot: np.ndarray, stretch: np.ndarray, shift: np.ndarray):
    """M^-1 (n, 3, 3) and o' = -M^-1 C (n, 3) for primitive p in n posed objects.

    Object point X goes to the camera as rot @ (stretch * X) + shift; the primitive's unit shape
    goes to the object as X = center + p.matrix @ u.
    """
    p_inv = np.diag(1.0 / np.asarray(p.half)) @ p.rotation.T  # (3, 3) = p.matrix^-1
    m_inv = p_inv @ ((1.0 / stretch)[:, :, None] * rot.transpose(0, 2, 1))  # (n, 3, 3)
    center = np.einsum("nij,nj->ni", rot, stretch * np.asarray(p.center)) + shift  # (n, 3)
    return m_inv, -np.einsum("nij,nj->ni", m_inv, center)


def background(scenes: Scenes, size: int) -> torch.Tensor:
    """A linear ramp plus faint stripes, (n, S, S); stripes split as sin(A + B) per row/col."""
    mean, grad, phi, amp, freq, psi, phase = scenes.background.T  # each (n,)
    c = (np.arange(size) + 0.5) / size * 2 - 1  # (S,) in [-1, 1]
    a = np.pi * freq[:, None] * np.cos(psi)[:, None] * c + phase[:, None]  # (n, S) columns
    b = np.pi * freq[:, None] * np.sin(psi)[:, None] * c  # (n, S) rows
    ramp_u = mean[:, None] + grad[:, None] / 2 * np.cos(phi)[:, None] * c  # (n, S)
    ramp_v = grad[:, None] / 2 * np.sin(phi)[:, None] * c  # (n, S)

    def col(x):  # (n, S) -> (n, 1, S) float32
        return torch.from_numpy(x).float()[:, None, :]

    def row(x):  # (n, S) -> (n, S, 1) float32
        return torch.from_numpy(x).float()[:, :, None]

    amp_t = torch.from_numpy(amp).float()[:, None, None]  # (n, 1, 1)
    stripes = col(np.sin(a)) * row(np.cos(b)) + col(np.cos(a)) * row(np.sin(b))  # (n, S, S)
    return col(ramp_u) + row(ramp_v) + amp_t * stripes  # (n, S, S)


@torch.no_grad()
def render_object(parts: list[Primitive], scenes: Scenes, cfg: RenderConfig) -> torch.Tensor:
    """Noise-free images of n scenes of one class, (n, H, W) float32 in [0, 1]."""
    n, size = len(scenes), cfg.image_size * cfg.supersample
    slant, tilt, x, y, depth, light_az, light_el = scenes.z.T  # each (n,)
    rot = rotation(slant, tilt)  # (n, 3, 3)
    th = cfg.tan_half_fov
    shift = np.stack([x * depth * th, y * depth * th, depth], 1)  # (n, 3) object centre
    u, v = pixel_rays(size, th)  # (1, 1, S), (1, S, 1)

    best = torch.full((n, size, size), torch.inf)  # (n, S, S) nearest hit so far
    normal = [torch.zeros(n, size, size) for _ in range(3)]  # world normal at the nearest hit
    shade = torch.zeros(n, size, size)  # primitive albedo at the nearest hit
    for p in parts:
        m_inv_np, o_np = unit_frame_maps(p, rot, scenes.stretch, shift)
        m_inv = torch.from_numpy(m_inv_np).float()[..., None, None]  # (n, 3, 3, 1, 1)
        o = tuple(torch.from_numpy(o_np[:, k]).float().view(n, 1, 1) for k in range(3))
        d = tuple(m_inv[:, k, 0] * u + m_inv[:, k, 1] * v + m_inv[:, k, 2] for k in range(3))
        t, n_unit = HIT[p.kind](o, d)  # (n, S, S), normal in the unit shape's frame
        closer = t < best
        best = torch.where(closer, t, best)
        for i in range(3):  # world normal = M^-T n_unit
            n_i = sum(m_inv[:, k, i] * n_unit[k] for k in range(3))  # (n, S, S)
            normal[i] = torch.where(closer, n_i, normal[i])
        shade = torch.where(closer, p.albedo, shade)

    light = torch.from_numpy(light_direction(light_az, light_el)).float()  # (n, 3)
    length = (normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2).sqrt().clamp(min=1e-12)
    cos = sum(normal[i] * light[:, i].view(n, 1, 1) for i in range(3)) / length  # (n, S, S)
    albedo = torch.from_numpy(scenes.albedo).float().view(n, 1, 1)
    lit = albedo * shade * (cfg.ambient + (1 - cfg.ambient) * cos.clamp(min=0))  # (n, S, S)
    image = torch.where(torch.isfinite(best), lit, background(scenes, size))  # (n, S, S)
    k, s = cfg.supersample, cfg.image_size
    image = image.view(n, s, k, s, k).mean(dim=(2, 4))  # (n, H, W) box-filtered
    return image.clamp(0, 1)
