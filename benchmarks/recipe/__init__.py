"""The training recipes: variants against a preset, and what a finished run gets wrong."""
