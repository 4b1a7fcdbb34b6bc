"""Losses (heads never compute their loss): contrastive, matching, masked-token and GAN losses.

Plain PyTorch, no Lightning.
"""

__all__: list[str] = []
