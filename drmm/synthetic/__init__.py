"""Synthetic rendered images with ground-truth nuisance latents (section 5.4), our own renderer.

shapes.py (the ten object classes) -> scene.py (latents and nuisances from a seed) ->
raycast.py (analytic ray casting, Lambertian shading) -> render.py (the data set) -> cli.py
(`drmm render`).
"""

from drmm.synthetic.render import render_dataset
from drmm.synthetic.scene import Z_NAMES, RenderConfig
from drmm.synthetic.shapes import CLASS_NAMES

__all__ = ["CLASS_NAMES", "Z_NAMES", "RenderConfig", "render_dataset"]
