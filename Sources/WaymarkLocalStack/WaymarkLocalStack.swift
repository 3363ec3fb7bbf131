// WaymarkLocalStack module.
