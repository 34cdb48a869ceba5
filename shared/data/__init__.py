"""Data: the domain plugin contract, sources (mirror / package / download), splits, the audit, image
decoding, torch datasets and loaders, and the frozen-feature cache."""
