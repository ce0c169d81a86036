"""The core every stage shares: params, manifests, images, files, pools, registries.

The lowest layer: it imports nothing else from the project (tests/test_layers.py checks).
"""
