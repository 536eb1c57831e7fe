"""The plan: a sweep file -> its stages (tuning, then comparison) -> RunSpecs. Light: no torch at import."""
