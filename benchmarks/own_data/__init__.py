"""A user's own data: image folders end to end, the labeling loop, novelty scores."""
