"""What Hearth's tests are made of, one concept a module.

- `deadlines`: the time unit every wait is scaled by, and `eventually` for server state
  no client can observe;
- `servers`: a server in the test's own process (`test_settings`, `serving`, `Running`);
- `processes`: `hearth serve` in a process of its own (`ServerProcess`);
- `api`: the HTTP API as a client calls it (`Api`, `Account`, `auth`);
- `client`: the websocket client as an app would write it (`Client`, `open_client`);
- `inbox`: what a client received, and the ways a test waits on it;
- `services`: PostgreSQL and Redis, a Redis of a test's own, a proxy to cut;
- `measurement`: `HealthProbe` and `record_figure`.

`tests/conftest.py` makes fixtures of them and re-exports every name.
"""
