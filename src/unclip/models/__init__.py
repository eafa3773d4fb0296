"""The networks (DESIGN.md §2, layer 3). Each maps ``(x_t, t, conditioning)`` to its raw output and knows
nothing of samplers, guidance or parameterization."""
