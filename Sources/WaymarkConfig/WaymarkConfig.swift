// WaymarkConfig module.
