"""OpenTelemetry traces and GenAI metrics, exported over OTLP/HTTP.

Self-contained: the spans and histograms are encoded to OTLP protobuf here (see ``otlp``),
so no OpenTelemetry package is needed at run time, and the app imports this package only
when ``otel`` is configured.
"""
