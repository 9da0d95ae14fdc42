"""Benchmark harness for vobiz_async: data, servers, peers, measurement and reports."""
