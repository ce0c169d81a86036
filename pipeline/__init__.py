"""fewshot-prep core: config, manifests, images, registries and the `prep` CLI."""
