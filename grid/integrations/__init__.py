"""Serving a grid node from another server instead of grid's own listener.

- :mod:`grid.integrations.aiohttp`: :func:`~grid.integrations.aiohttp.mount`
  the grid route into an aiohttp ``web.Application`` (``gridmux[aiohttp]``).
- :mod:`grid.integrations.asgi`: :class:`~grid.integrations.asgi.GridASGI`,
  an ASGI application for uvicorn, hypercorn or any ASGI 3 server, wrapping
  your own ASGI app (``gridmux[asgi]`` installs uvicorn).

Either way the other server owns the socket and the WebSocket framing and
hands grid whole messages; the manager runs with ``start(serve=False)`` and
still dials the peers it should dial itself.  A server that can give up a raw
transport can use :meth:`grid.Manager.check_upgrade` and
:meth:`grid.Manager.adopt` instead, which keeps grid's own framing.

The submodules import their server's package; this package imports nothing
optional.
"""

__all__: list[str] = []
