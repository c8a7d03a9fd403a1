"""The life of one inference request, as plain calls on typed data (no HTTP here).

`admit.admit` takes a parsed request and its credential through identity, the stop switch,
the tenant's policy, admission and the router, and returns an `Admitted` request on a
replica, its beginning in the audit log. `run.Run` streams it, settles its usage and writes its
end. `state.AppState` is what both share with the routes. The api layer parses, maps the domain
errors raised here to HTTP (`api/errors.py`) and frames the stream.
"""
