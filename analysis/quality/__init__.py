"""Image quality: Frechet distances, segmenters, the FID protocol, statistics, per-seed scores."""
