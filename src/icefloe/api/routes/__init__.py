"""One router per resource; :mod:`icefloe.api.main` assembles them."""
