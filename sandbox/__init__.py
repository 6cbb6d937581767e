"""Private sandbox engines and generated content, for the demo, the tests and the benchmarks.

Nothing here is used by reclaim itself against a real host.
"""
