"""The chaos soak: concurrent agents through a store in real processes, faults on a schedule,
every op recorded and checked against the history (``crashgate soak``)."""
