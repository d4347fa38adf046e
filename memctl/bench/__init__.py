"""`memctl bench`: measured figures for the core (speed) and for retrieval quality."""
