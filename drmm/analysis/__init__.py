"""What a trained DRMM encodes: linear decoding of nuisance latents per layer (section 5.4).

decoding.py (activations -> PCA -> quantised latents -> linear classifier) -> plot.py (Figure 4)
-> cli.py (`drmm analyze`).
"""
