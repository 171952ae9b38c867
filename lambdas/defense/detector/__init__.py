"""The built-in detector: per-device limits over Lambda tumbling windows on the device Kinesis stream."""
