"""One module per pipeline stage; each exposes run(params, inputs, outputs) -> StageReport."""
