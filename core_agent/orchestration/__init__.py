"""The mind: route a request, plan it, dispatch its steps to the queues, compose the answer."""
