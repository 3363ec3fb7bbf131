// WaymarkRedis module.
