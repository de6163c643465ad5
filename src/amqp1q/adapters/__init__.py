"""Backends behind the :class:`~amqp1q.Adapter` seam: ``memory``, ``proton``, ``servicebus``."""
