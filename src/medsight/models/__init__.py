"""Networks named by tasks (an allow-list of MONAI networks) and their weights files."""

from medsight.models.networks import build_network, load_network, save_weights

__all__ = ["build_network", "load_network", "save_weights"]
