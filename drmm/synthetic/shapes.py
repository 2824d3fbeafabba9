"""The ten procedural 3D object classes of the synthetic data set (section 5.4, Figure 3).

The paper rendered 3D models of CIFAR-10's ten classes with Blender and never released them; we
build each class from a handful of analytic primitives instead, in CIFAR-10's order: airplane,
automobile, bird, cat, deer, dog, frog, horse, ship, truck.

Primitives (each a unit shape mapped into the object by a rotation, half-sizes and a centre):
- ellipsoid: the unit sphere,
- box: the cube [-1, 1]^3,
- cylinder: the unit disc in (x, y) times [-1, 1] along its axis z (capped).

Object frame: x points forward (nose, head), y up, z to the side. Each class is re-centred on
its bounding box and scaled so that its largest half-extent is 1; the renderer's x/y location is
then the image position of the box centre and depth is measured in these units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("ellipsoid", "box", "cylinder")


@dataclass(frozen=True)
class Primitive:
    kind: str  # one of KINDS
    center: tuple[float, float, float]  # centre in the object frame
    half: tuple[float, float, float]  # half-sizes along the primitive's own axes
    rotation: np.ndarray  # (3, 3) primitive axes -> object frame (columns = its axes)
    albedo: float = 1.0  # reflectance relative to the object's (wheels, eyes darker)

    @property
    def matrix(self) -> np.ndarray:
        """Unit shape -> object frame, linear part: rotation @ diag(half)."""
        return self.rotation @ np.diag(self.half)  # (3, 3)


def rot(z: float = 0.0, y: float = 0.0, x: float = 0.0) -> np.ndarray:
    """Rotation Rz(z) @ Ry(y) @ Rx(x), angles in degrees (x applied first)."""
    a, b, c = np.radians([z, y, x])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def part(kind: str, center, half, rotation=None, albedo: float = 1.0) -> Primitive:
    r = np.eye(3) if rotation is None else rotation
    return Primitive(kind, tuple(map(float, center)), tuple(map(float, half)), r, albedo)


def limb(kind: str, p0, p1, radius: float, albedo: float = 1.0) -> Primitive:
    """A cylinder or an elongated ellipsoid from point p0 to point p1 (legs, necks, tails)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    axis = p1 - p0
    length = float(np.linalg.norm(axis))
    d = axis / length
    ref = np.array([1.0, 0, 0]) if abs(d[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(d, ref)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)  # (e1, e2, d) is right-handed: the unit shape's z goes along the limb
    return part(kind, (p0 + p1) / 2, (radius, radius, length / 2), np.stack([e1, e2, d], 1), albedo)


def pair(make, z: float):
    """The same part on both sides of the object, at +z and -z."""
    return [make(z), make(-z)]


def airplane():
    return [
        part("ellipsoid", (0, 0, 0), (1.0, 0.13, 0.13)),  # fuselage
        part("box", (-0.05, 0, 0.47), (0.17, 0.02, 0.47), rot(y=-18)),  # swept wings
        part("box", (-0.05, 0, -0.47), (0.17, 0.02, 0.47), rot(y=18)),
        part("box", (-0.85, 0.03, 0), (0.1, 0.015, 0.32)),  # tailplane
        part("box", (-0.8, 0.2, 0), (0.13, 0.2, 0.015), rot(z=25)),  # fin, leaning back
        *pair(lambda z: limb("cylinder", (0.28, -0.1, z), (-0.02, -0.1, z), 0.065, 0.6), 0.42),
    ]


def automobile():
    wheels = [part("cylinder", (x, -0.27, z), (0.2, 0.2, 0.07), albedo=0.2)
              for x in (0.6, -0.6) for z in (0.43, -0.43)]
    return [
        part("box", (0, -0.05, 0), (1.0, 0.2, 0.45)),  # body
        part("box", (-0.12, 0.3, 0), (0.5, 0.17, 0.4), albedo=0.55),  # cabin (windows darker)
        part("ellipsoid", (0.55, 0.12, 0), (0.4, 0.06, 0.42)),  # rounded bonnet
        *wheels,
    ]


def bird():
    return [
        part("ellipsoid", (0, 0, 0), (0.5, 0.28, 0.26), rot(z=20)),  # body, front raised
        part("ellipsoid", (0.5, 0.32, 0), (0.19, 0.18, 0.17)),  # head
        limb("ellipsoid", (0.62, 0.3, 0), (0.92, 0.26, 0), 0.055, 0.45),  # beak
        part("ellipsoid", (-0.65, -0.22, 0), (0.33, 0.035, 0.13), rot(z=22)),  # tail
        *pair(lambda z: part("ellipsoid", (-0.05, 0.05, z), (0.42, 0.16, 0.05), rot(z=20), 0.7),
              0.25),  # wings
        *pair(lambda z: limb("cylinder", (0.05, -0.2, z), (0.05, -0.55, z), 0.03, 0.3), 0.08),
    ]


def cat():
    """Sitting, tail curled round on the ground: a silhouette unlike the standing animals."""
    return [
        part("ellipsoid", (0, 0, 0), (0.3, 0.42, 0.25), rot(z=-15)),  # upright body
        part("ellipsoid", (-0.1, -0.3, 0), (0.35, 0.2, 0.28)),  # haunches
        part("ellipsoid", (0.2, 0.55, 0), (0.2, 0.18, 0.2)),  # round head
        *pair(lambda z: part("box", (0.2, 0.73, z), (0.07, 0.07, 0.025), rot(z=45), 0.8),
              0.1),  # pointed ears
        *pair(lambda z: limb("cylinder", (0.18, 0.0, z), (0.22, -0.48, z), 0.055), 0.1),
        limb("ellipsoid", (-0.4, -0.45, 0.05), (0.15, -0.5, 0.33), 0.06),  # tail
    ]


def deer():
    legs = [limb("cylinder", (x, 0, z), (x, -0.7, z), 0.045) for x in (0.32, -0.32)
            for z in (0.09, -0.09)]
    return [
        part("ellipsoid", (0, 0.1, 0), (0.45, 0.2, 0.16)),  # slim body
        limb("ellipsoid", (0.3, 0.2, 0), (0.5, 0.6, 0), 0.085),  # neck
        limb("ellipsoid", (0.46, 0.62, 0), (0.72, 0.5, 0), 0.085),  # head
        *legs,  # long thin legs
        *pair(lambda z: limb("cylinder", (0.46, 0.66, z / 4), (0.36, 1.0, z), 0.035, 0.6), 0.2),
        *pair(lambda z: limb("cylinder", (0.41, 0.84, z * 0.65), (0.58, 1.0, z * 0.8), 0.03,
                             0.6), 0.2),  # antler tines
        part("ellipsoid", (-0.45, 0.22, 0), (0.07, 0.05, 0.04), albedo=1.0),  # short tail
    ]


def dog():
    legs = [limb("cylinder", (x, -0.05, z), (x, -0.5, z), 0.065) for x in (0.35, -0.35)
            for z in (0.11, -0.11)]
    return [
        part("ellipsoid", (0, 0, 0), (0.52, 0.2, 0.18)),  # body
        part("ellipsoid", (0.35, 0.02, 0), (0.2, 0.22, 0.19)),  # chest
        part("ellipsoid", (0.6, 0.32, 0), (0.17, 0.16, 0.15)),  # head
        limb("ellipsoid", (0.66, 0.28, 0), (0.92, 0.25, 0), 0.08),  # snout
        *pair(lambda z: part("ellipsoid", (0.55, 0.25, z), (0.07, 0.14, 0.03), albedo=0.5),
              0.15),  # floppy ears
        *legs,
        limb("ellipsoid", (-0.48, 0.08, 0), (-0.8, 0.38, 0), 0.045),  # tail up
    ]


def frog():
    return [
        part("ellipsoid", (0, 0, 0), (0.45, 0.2, 0.32), rot(z=12)),  # squat body
        part("ellipsoid", (0.35, 0.1, 0), (0.22, 0.14, 0.28)),  # wide head
        *pair(lambda z: part("ellipsoid", (0.38, 0.25, z), (0.08, 0.08, 0.08), albedo=0.35),
              0.14),  # bulging eyes
        *pair(lambda z: part("ellipsoid", (-0.2, -0.1, z), (0.35, 0.1, 0.13),
                             rot(y=-20 if z > 0 else 20)), 0.38),  # folded back legs
        *pair(lambda z: part("ellipsoid", (0.05, -0.2, z), (0.18, 0.04, 0.1)), 0.5),  # feet
        *pair(lambda z: limb("cylinder", (0.3, -0.05, z), (0.38, -0.25, z * 1.25), 0.05), 0.2),
    ]


def horse():
    legs = [limb("cylinder", (x, 0, z), (x, -0.65, z), 0.055) for x in (0.45, -0.45)
            for z in (0.11, -0.11)]
    return [
        part("ellipsoid", (0, 0.1, 0), (0.6, 0.24, 0.2)),  # body
        limb("ellipsoid", (0.42, 0.2, 0), (0.78, 0.62, 0), 0.13),  # neck
        limb("ellipsoid", (0.72, 0.68, 0), (1.02, 0.42, 0), 0.1),  # long head, nose down
        *legs,
        limb("ellipsoid", (-0.58, 0.22, 0), (-0.85, -0.25, 0), 0.065, 0.4),  # tail
    ]


def ship():
    return [
        part("box", (-0.15, -0.2, 0), (0.75, 0.17, 0.26), albedo=0.7),  # hull
        part("ellipsoid", (0.6, -0.2, 0), (0.4, 0.17, 0.26), albedo=0.7),  # bow
        part("box", (-0.25, 0.07, 0), (0.4, 0.1, 0.2)),  # deckhouse
        part("box", (-0.05, 0.24, 0), (0.14, 0.08, 0.17)),  # bridge
        limb("cylinder", (-0.45, 0.1, 0), (-0.45, 0.45, 0), 0.085, 0.4),  # funnels
        limb("cylinder", (-0.66, 0.1, 0), (-0.66, 0.4, 0), 0.075, 0.4),
        limb("cylinder", (0.3, -0.03, 0), (0.3, 0.55, 0), 0.03),  # mast
    ]


def truck():
    wheels = [part("cylinder", (x, -0.42, z), (0.19, 0.19, 0.07), albedo=0.2)
              for x in (0.7, -0.4, -0.8) for z in (0.4, -0.4)]
    return [
        part("box", (0.72, 0.05, 0), (0.26, 0.36, 0.42), albedo=0.85),  # cab
        part("box", (-0.28, 0.17, 0), (0.7, 0.48, 0.45)),  # cargo box
        part("box", (0.0, -0.35, 0), (1.0, 0.06, 0.36), albedo=0.4),  # chassis
        *wheels,
    ]


CLASS_BUILDERS = (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck)
CLASS_NAMES = tuple(f.__name__ for f in CLASS_BUILDERS)


def half_extent(p: Primitive) -> np.ndarray:
    """Exact half-size of p's axis-aligned bounding box in the object frame, (3,)."""
    m = p.matrix
    if p.kind == "ellipsoid":
        return np.sqrt((m**2).sum(1))
    if p.kind == "box":
        return np.abs(m).sum(1)
    return np.sqrt(m[:, 0] ** 2 + m[:, 1] ** 2) + np.abs(m[:, 2])  # cylinder: disc + axis


def normalise(parts: list[Primitive]) -> list[Primitive]:
    """Centre the object on its bounding box and scale its largest half-extent to 1."""
    lo = np.min([np.asarray(p.center) - half_extent(p) for p in parts], 0)
    hi = np.max([np.asarray(p.center) + half_extent(p) for p in parts], 0)
    mid, scale = (lo + hi) / 2, 2 / (hi - lo).max()
    return [part(p.kind, (np.asarray(p.center) - mid) * scale, np.asarray(p.half) * scale,
                 p.rotation, p.albedo) for p in parts]


def object_classes() -> list[list[Primitive]]:
    """The ten classes, each a normalised list of primitives, in CLASS_NAMES order."""
    return [normalise(build()) for build in CLASS_BUILDERS]
