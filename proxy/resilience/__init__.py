"""Rate-limit resilience: wait hints from provider headers (hints), shared per-upstream
cooldowns (cooldown), and the attempt loop that uses both (attempts).

Import from the submodules; this package imports nothing so that loading it stays cheap.
"""
