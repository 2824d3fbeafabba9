"""Scripts that measure drmm and write the records under results/ (benchmarks/README.md lists
them). Run each from the repository root as a module: `python -m benchmarks.FOLDER.SCRIPT`."""
