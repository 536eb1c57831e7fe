"""Execution: claims on runs (locks), one run or lockstep group trained and recorded, the local executor's stages and
shards, and the Ray executor."""
