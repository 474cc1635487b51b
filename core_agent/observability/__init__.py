"""What the appliance tells about itself: Prometheus metrics and OpenTelemetry spans."""
