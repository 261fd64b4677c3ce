"""The main-board side of the link."""
