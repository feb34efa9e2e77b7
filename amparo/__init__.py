"""The composition root: command line and process wiring."""
