"""Facts of a model, one home each: node MACs, parameter count, static shapes, the value probe."""
