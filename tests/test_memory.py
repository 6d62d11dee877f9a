from __future__ import annotations

from conformance import conformance_test

TestMemoryConformance = conformance_test("memory")
TestMemoryCosineConformance = conformance_test("memory?metric=cosine", max_examples=15)
