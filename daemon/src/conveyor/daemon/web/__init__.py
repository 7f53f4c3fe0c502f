"""The web dashboard ``conveyord`` serves with ``web_listen``: runs, a run's
stage graph and timings, stage logs, artifacts, environments, the server.

It runs in the daemon's trio run (hypercorn's trio worker,
:mod:`conveyor.daemon.web.server`), reads through the same service layer
as the gRPC API, authenticates with the API's tokens and roles
(:mod:`conveyor.daemon.web.sessions`) and is live through server-sent
events fed by the daemon's event bus (:mod:`conveyor.daemon.web.live`).
See docs/dashboard.md.
"""
