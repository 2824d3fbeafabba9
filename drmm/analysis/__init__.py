"""What a trained DRMM encodes: linear decoding of nuisance latents per layer (section 5.4),
and what it generates (Appendix B).

decoding.py (activations -> PCA -> quantised latents -> linear classifier) -> plot.py (Figure 4)
-> cli.py (`drmm analyze`); sampling.py (the switch prior, the draws) -> sample.py
(`drmm sample`).
"""
