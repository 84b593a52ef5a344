"""OpenTelemetry traces and GenAI metrics (the optional ``otel`` extra).

Only ``semconv`` and ``content`` may be imported without the SDK installed; ``telemetry``
imports it, and the app imports ``telemetry`` only when ``otel`` is configured, so a proxy
without tracing never loads OpenTelemetry.
"""
