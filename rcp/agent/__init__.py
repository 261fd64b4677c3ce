"""The satellite side of the link."""
