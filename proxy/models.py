"""The request log arrives with the instances work."""
