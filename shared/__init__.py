"""transferlab's domain-agnostic library: config, plugins, backbones, regimes, training, tracking."""
