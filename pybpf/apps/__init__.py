"""Applications built on the public API only: the demo, the splice proxy, reuseport restart."""
