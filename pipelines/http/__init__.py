"""The project's one HTTP client: what API destinations, SNS HTTP(S)
subscriptions and every later HTTP target send requests with.

- ``client``: ``HttpClient`` (one aiohttp session and its keep-alive pool
  per destination, TLS verified by default, an optional CA file), ``Sent``
  (what a request got back: the status, the headers, the start of the body),
  ``retry_after`` (the ``Retry-After`` header as seconds);
- ``ratelimit``: ``TokenBucket`` (a rate that makes callers wait, never drops);
- ``auth``: ``Authorization`` (a connection's BASIC, API_KEY or
  OAUTH_CLIENT_CREDENTIALS, with its extra header, query and body
  parameters; the OAuth token cached until shortly before it expires).
"""
