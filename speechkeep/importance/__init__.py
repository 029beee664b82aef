"""Parameter-importance analysis (seed 001 Sec. 2; METHODS §2).

- :mod:`.taylor`: first-order Taylor importance ``|dL/dtheta * theta|`` of every parameter;
- :mod:`.summary`: per layer / per module-type aggregates;
- :mod:`.deactivate`: zero the top / bottom / random fraction and measure perplexity (seed Table 1);
- :mod:`.distribution`: layer-wise importance shares and their shift between runs (seed Fig. 2/3);
- :mod:`.heatmaps`: rank clustering (seed Fig. 1) and parameter-change heatmaps (seed Fig. 4).
"""
