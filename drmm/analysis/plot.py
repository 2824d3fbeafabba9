"""The decoding figure, drawn like the paper's Figure 4: one panel per latent, the decoding
error against the layer, one line per model, random chance as a dashed line.

A line's colour comes from the first word of its model name (DRMM, DCN) and its style from the
rest ("N_L=4000", "N_L=50K"), so the paper's four lines (two models at two N_L) read apart."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from drmm.files import atomic_write

LINESTYLES = ("-", ":", "-.", (0, (5, 1)))  # not "--": that is the chance line


def plot_decoding(rows: list[dict], path: str | Path,
                  title: str = "Linear decoding of the latents from each layer") -> None:
    """rows: the decoding.csv rows (model, layer, latent, error, chance, layer_name)."""
    latents = list(dict.fromkeys(r["latent"] for r in rows))  # in first-seen order
    models = list(dict.fromkeys(r["model"] for r in rows))
    family = {m: m.partition(" ")[0] for m in models}  # "DRMM N_L=4000" -> "DRMM"
    variant = {m: m.partition(" ")[2] for m in models}  # "DRMM N_L=4000" -> "N_L=4000"
    families, variants = list(dict.fromkeys(family.values())), list(dict.fromkeys(variant.values()))
    style = {m: {"color": f"C{families.index(family[m]) % 10}",
                 "linestyle": LINESTYLES[variants.index(variant[m]) % len(LINESTYLES)]}
             for m in models}
    cols = min(4, len(latents))
    n_rows = -(-len(latents) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * n_rows))
    axes = fig.subplots(n_rows, cols, squeeze=False)
    for ax in axes.flat[len(latents):]:
        ax.axis("off")
    for ax, latent in zip(axes.flat, latents, strict=False):
        mine = [r for r in rows if r["latent"] == latent]
        for model in models:
            pts = sorted((r["layer"], r["error"]) for r in mine if r["model"] == model)
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", ms=3,
                    label=model, **style[model])
        chance = sum(r["chance"] for r in mine) / len(mine)
        ax.axhline(100 * chance, color="gray", linestyle="--", linewidth=1, label="chance")
        names = {r["layer"]: r["layer_name"] for r in mine}  # the first model's, if they differ
        ax.set_xticks(sorted(names))
        ax.set_xticklabels([names[k] for k in sorted(names)], rotation=60, fontsize=7)
        ax.set_title(latent, fontsize=9)
        ax.set_ylim(0, 100)
        ax.set_ylabel("decoding error (%)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
