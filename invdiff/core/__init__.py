"""The engine a solve needs: SDEs, scores, the UNet, samplers, operators, checkpoints."""
