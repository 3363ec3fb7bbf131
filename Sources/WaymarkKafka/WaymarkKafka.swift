// WaymarkKafka module.
