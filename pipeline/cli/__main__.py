"""`python -m pipeline.cli ...`: what `accelerate launch` / `torchrun` start on each GPU."""

from pipeline.cli.app import app

app()
