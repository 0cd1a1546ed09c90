"""The modulation probe: variance decomposition, ablations, figures, SPADE-to-CLADE conversion."""
