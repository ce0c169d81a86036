"""Named, swappable building blocks: detectors, embedders, backbones, recipes, generators.

Above the core, below the stages: components import the core only, never a stage or the CLI.
"""
