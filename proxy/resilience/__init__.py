"""Rate-limit resilience: wait hints from provider headers (hints), shared cooldowns
(cooldown), the scope a limit belongs to (scope), typed rate-limit snapshots and the honest
next-admission time (ratelimits), the live pacing model (pacing) with its memory/Redis stores
(pacing_store) and fair admission queue (pacer), and the attempt loop that uses them (attempts).

Import from the submodules; this package imports nothing so that loading it stays cheap.
"""
