"""fewshot-prep's library, in layers: ``core`` < ``components`` < (the stages) < ``cli``.

- ``pipeline.core``: params, manifests, images, files, the process pool, registries;
- ``pipeline.components``: detectors, embedders, backbones, recipes, generators, identity;
- ``stages`` (a package beside this one): one module per pipeline stage;
- ``pipeline.cli``: the `prep` command and its views.

Each layer imports only from the layers before it (tests/test_layers.py).
"""
