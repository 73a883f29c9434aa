"""Instances, client keys and rate rules arrive with the instances work."""
