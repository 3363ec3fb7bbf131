// WaymarkEngine module.
