"""Controllers (policies) and shared supernets of the ENAS search."""
